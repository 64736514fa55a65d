//! Pictures: ROC curves per task, and training/validation loss curves of one or more runs.
//!
//! Each figure is written twice, as PNG (to look at, and for slides) and as SVG (to scale into
//! a paper). Drawing uses plotters with its pure-Rust `ab_glyph` text and a bundled DejaVu Sans
//! (`assets/`, Bitstream Vera licence, beside it), so figures render the same on a fresh machine
//! without fontconfig or system fonts.

use crate::auc::RocCurve;
use anyhow::{anyhow, Result};
use cxr_core::runlog::{MetricRecord, Phase};
use cxr_core::{atomic, Observation, COMPETITION_5};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use std::path::{Path, PathBuf};
use std::sync::Once;

const FONT: &str = "sans-serif";
static FONT_BYTES: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");

fn register_font() {
    static REGISTER: Once = Once::new();
    REGISTER.call_once(|| {
        let ok = plotters::style::register_font(FONT, FontStyle::Normal, FONT_BYTES).is_ok();
        assert!(ok, "the bundled DejaVuSans.ttf does not parse");
    });
}

/// Tableau 10: distinguishable, and still readable in grey.
const COLORS: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

fn color(i: usize) -> RGBColor {
    COLORS[i % COLORS.len()]
}

/// A figure drawable on any plotters backend.
trait Figure {
    fn size(&self) -> (u32, u32);
    fn draw<DB: DrawingBackend>(
        &self,
        root: &DrawingArea<DB, Shift>,
    ) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>>;
}

/// Draw `figure` to `dir/stem.png` and `dir/stem.svg`, atomically.
fn save<F: Figure>(figure: &F, dir: &Path, stem: &str) -> Result<Vec<PathBuf>> {
    register_font();
    let (w, h) = figure.size();
    let fail = |e: String| anyhow!("drawing {stem}: {e}");
    let mut rgb = vec![255u8; w as usize * h as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (w, h)).into_drawing_area();
        figure.draw(&root).map_err(|e| fail(e.to_string()))?;
        root.present().map_err(|e| fail(e.to_string()))?;
    }
    let mut png_bytes = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut png_bytes, w, h);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        encoder.set_compression(png::Compression::High);
        let mut writer = encoder.write_header()?;
        writer.write_image_data(&rgb)?;
        writer.finish()?;
    }
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (w, h)).into_drawing_area();
        figure.draw(&root).map_err(|e| fail(e.to_string()))?;
        root.present().map_err(|e| fail(e.to_string()))?;
    }
    let png_path = dir.join(format!("{stem}.png"));
    let svg_path = dir.join(format!("{stem}.svg"));
    atomic::write_bytes(&png_path, &png_bytes)?;
    atomic::write_bytes(&svg_path, svg.as_bytes())?;
    Ok(vec![png_path, svg_path])
}

/// One task's panel: its ROC curve, or one curve per model.
#[derive(Debug, Clone)]
pub struct RocPanel {
    pub title: String,
    /// (legend label, curve); none when the AUC is undefined, which the panel then says.
    pub curves: Vec<(String, RocCurve)>,
    /// Further legend lines without a line sample (counts, a p-value).
    pub notes: Vec<String>,
}

struct RocGrid<'a> {
    panels: &'a [RocPanel],
    cols: usize,
}

const PANEL: (u32, u32) = (420, 440);

impl Figure for RocGrid<'_> {
    fn size(&self) -> (u32, u32) {
        let rows = self.panels.len().div_ceil(self.cols) as u32;
        (PANEL.0 * self.cols as u32, PANEL.1 * rows)
    }

    fn draw<DB: DrawingBackend>(
        &self,
        root: &DrawingArea<DB, Shift>,
    ) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
        root.fill(&WHITE)?;
        let rows = self.panels.len().div_ceil(self.cols);
        for (area, panel) in root.split_evenly((rows, self.cols)).iter().zip(self.panels) {
            let mut chart = ChartBuilder::on(area)
                .caption(&panel.title, (FONT, 21))
                .margin(12)
                .x_label_area_size(48)
                .y_label_area_size(58)
                .build_cartesian_2d(0f64..1f64, 0f64..1f64)?;
            chart
                .configure_mesh()
                .x_desc("1 − specificity (false positive rate)")
                .y_desc("sensitivity")
                .x_labels(6)
                .y_labels(6)
                .label_style((FONT, 14))
                .axis_desc_style((FONT, 15))
                .light_line_style(WHITE.mix(0.0))
                .bold_line_style(BLACK.mix(0.08))
                .draw()?;
            chart.draw_series(DashedLineSeries::new(
                [(0.0, 0.0), (1.0, 1.0)],
                6,
                5,
                BLACK.mix(0.35).stroke_width(1),
            ))?;
            if panel.curves.is_empty() {
                let centre = TextStyle::from((FONT, 17).into_font())
                    .pos(Pos::new(HPos::Center, VPos::Center));
                chart.draw_series([
                    Text::new("AUC undefined:", (0.5, 0.56), centre.clone()),
                    Text::new("one class only", (0.5, 0.46), centre.clone()),
                ])?;
            }
            for (i, (label, curve)) in panel.curves.iter().enumerate() {
                let c = color(i);
                let thin = curve.thinned(2000);
                chart
                    .draw_series(LineSeries::new(
                        thin.fpr.into_iter().zip(thin.tpr),
                        c.stroke_width(2),
                    ))?
                    .label(label)
                    .legend(move |(x, y)| {
                        PathElement::new([(x, y), (x + 22, y)], c.stroke_width(3))
                    });
            }
            for note in &panel.notes {
                chart
                    .draw_series(LineSeries::new(std::iter::empty(), WHITE))?
                    .label(note)
                    .legend(|(x, y)| EmptyElement::at((x, y)));
            }
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::LowerRight)
                .label_font((FONT, 15))
                .background_style(WHITE.mix(0.9))
                .border_style(BLACK.mix(0.3))
                .draw()?;
        }
        Ok(())
    }
}

/// Draw `panels` in a grid to `dir/stem.{png,svg}`.
pub fn roc_figure(panels: &[RocPanel], dir: &Path, stem: &str) -> Result<Vec<PathBuf>> {
    if panels.is_empty() {
        return Ok(Vec::new());
    }
    let cols = match panels.len() {
        1..=3 => panels.len(),
        4 => 2,
        5 | 6 | 9 => 3,
        _ => 4,
    };
    save(&RocGrid { panels, cols }, dir, stem)
}

/// What the x axis of loss curves counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum XAxis {
    Epoch,
    Step,
}

/// One run's curves, read from its `metrics.jsonl`.
#[derive(Debug, Clone, PartialEq)]
pub struct RunCurves {
    pub name: String,
    pub train: Vec<(f64, f64)>,
    pub valid: Vec<(f64, f64)>,
    /// Mean validation AUC: over the 5 competition tasks when a record has them all defined,
    /// otherwise over every defined AUC it logged.
    pub valid_auc: Vec<(f64, f64)>,
    /// Whether every point of `valid_auc` is a competition-5 mean.
    pub valid_auc_competition: bool,
    /// Records whose loss was NaN or infinite (not drawn).
    pub non_finite: usize,
}

impl RunCurves {
    pub fn new(name: &str, records: &[MetricRecord], x: XAxis) -> RunCurves {
        let mut run = RunCurves {
            name: name.to_string(),
            train: Vec::new(),
            valid: Vec::new(),
            valid_auc: Vec::new(),
            valid_auc_competition: true,
            non_finite: 0,
        };
        for r in records {
            let at = match x {
                XAxis::Epoch => r.epoch,
                XAxis::Step => r.step as f64,
            };
            if !r.loss.is_finite() {
                run.non_finite += 1;
            } else if r.phase == Phase::Train {
                run.train.push((at, r.loss));
            } else {
                run.valid.push((at, r.loss));
            }
            if let (Phase::Valid, Some(auc)) = (r.phase, &r.auc) {
                let defined: Vec<(Option<Observation>, f64)> = auc
                    .iter()
                    .filter_map(|(k, v)| v.map(|v| (Observation::parse(k).ok(), v)))
                    .collect();
                let competition: Vec<f64> = COMPETITION_5
                    .iter()
                    .filter_map(|o| defined.iter().find(|d| d.0 == Some(*o)).map(|d| d.1))
                    .collect();
                let used: Vec<f64> = if competition.len() == COMPETITION_5.len() {
                    competition
                } else {
                    run.valid_auc_competition = false;
                    defined.iter().map(|d| d.1).collect()
                };
                if !used.is_empty() {
                    run.valid_auc
                        .push((at, used.iter().sum::<f64>() / used.len() as f64));
                }
            }
        }
        run
    }
}

/// Exponential moving average with TensorBoard's bias correction; `weight` 0 draws raw values.
fn smoothed(points: &[(f64, f64)], weight: f64) -> Vec<(f64, f64)> {
    let (mut avg, mut norm) = (0.0, 0.0);
    points
        .iter()
        .map(|&(x, y)| {
            avg = weight * avg + (1.0 - weight) * y;
            norm = weight * norm + (1.0 - weight);
            (x, avg / norm)
        })
        .collect()
}

struct LossFigure<'a> {
    runs: &'a [RunCurves],
    x_label: &'a str,
    smooth: f64,
    /// Draw validation AUC instead of losses.
    auc: bool,
}

fn padded(values: impl Iterator<Item = f64> + Clone, floor: Option<f64>) -> std::ops::Range<f64> {
    let lo = values.clone().fold(f64::INFINITY, f64::min);
    let hi = values.fold(f64::NEG_INFINITY, f64::max);
    if !lo.is_finite() {
        return 0.0..1.0;
    }
    // A single value (one validation point per run) still gets an axis of readable width.
    let alone = if hi - lo < 1e-9 {
        0.1 * hi.abs().max(1.0)
    } else {
        0.0
    };
    let pad = ((hi - lo) * 0.06).max(1e-3).max(alone);
    let lo = floor.map_or(lo - pad, |f| (lo - pad).max(f));
    lo..hi + pad
}

impl Figure for LossFigure<'_> {
    fn size(&self) -> (u32, u32) {
        (1200, 760)
    }

    fn draw<DB: DrawingBackend>(
        &self,
        root: &DrawingArea<DB, Shift>,
    ) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
        root.fill(&WHITE)?;
        let series = |r: &RunCurves| -> Vec<(f64, f64)> {
            if self.auc {
                r.valid_auc.clone()
            } else {
                r.train.iter().chain(&r.valid).copied().collect()
            }
        };
        let all: Vec<(f64, f64)> = self.runs.iter().flat_map(series).collect();
        let x_range = padded(all.iter().map(|p| p.0), Some(0.0));
        let y_range = padded(all.iter().map(|p| p.1), Some(0.0));
        let competition = self.runs.iter().all(|r| r.valid_auc_competition);
        let (title, y_desc) = match (self.auc, competition) {
            (true, true) => ("Validation AUC", "mean AUC, CheXpert competition 5"),
            (true, false) => ("Validation AUC", "mean AUC of the tasks logged"),
            (false, _) => ("Training and validation loss", "loss"),
        };
        let mut chart = ChartBuilder::on(root)
            .caption(title, (FONT, 28))
            .margin(20)
            .x_label_area_size(60)
            .y_label_area_size(80)
            .build_cartesian_2d(x_range, y_range)?;
        chart
            .configure_mesh()
            .x_desc(self.x_label)
            .y_desc(y_desc)
            .label_style((FONT, 17))
            .axis_desc_style((FONT, 19))
            .light_line_style(BLACK.mix(0.04))
            .bold_line_style(BLACK.mix(0.1))
            .draw()?;
        for (i, run) in self.runs.iter().enumerate() {
            let c = color(i);
            if self.auc {
                chart
                    .draw_series(LineSeries::new(
                        run.valid_auc.iter().copied(),
                        c.stroke_width(3),
                    ))?
                    .label(run.name.clone())
                    .legend(move |(x, y)| {
                        PathElement::new([(x, y), (x + 26, y)], c.stroke_width(3))
                    });
                chart.draw_series(run.valid_auc.iter().map(|&p| Circle::new(p, 4, c.filled())))?;
                continue;
            }
            if !run.train.is_empty() {
                let label = if self.smooth > 0.0 {
                    format!("{} train (smoothed {})", run.name, self.smooth)
                } else {
                    format!("{} train", run.name)
                };
                if self.smooth > 0.0 {
                    chart.draw_series(LineSeries::new(
                        run.train.iter().copied(),
                        c.mix(0.25).stroke_width(1),
                    ))?;
                }
                chart
                    .draw_series(LineSeries::new(
                        smoothed(&run.train, self.smooth),
                        c.stroke_width(2),
                    ))?
                    .label(label)
                    .legend(move |(x, y)| {
                        PathElement::new([(x, y), (x + 26, y)], c.stroke_width(2))
                    });
            }
            if !run.valid.is_empty() {
                chart
                    .draw_series(DashedLineSeries::new(
                        run.valid.iter().copied(),
                        10,
                        6,
                        c.stroke_width(3),
                    ))?
                    .label(format!("{} valid", run.name))
                    .legend(move |(x, y)| {
                        EmptyElement::at((x, y))
                            + PathElement::new([(0, 0), (10, 0)], c.stroke_width(3))
                            + PathElement::new([(16, 0), (26, 0)], c.stroke_width(3))
                    });
                chart.draw_series(run.valid.iter().map(|&p| Circle::new(p, 5, c.filled())))?;
            }
        }
        chart
            .configure_series_labels()
            // Losses fall and AUCs rise: the corner the curves leave free.
            .position(if self.auc {
                SeriesLabelPosition::LowerRight
            } else {
                SeriesLabelPosition::UpperRight
            })
            .label_font((FONT, 17))
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK.mix(0.3))
            .draw()?;
        Ok(())
    }
}

/// Draw `loss.{png,svg}` in `dir`, and `valid_auc.{png,svg}` when any run logged validation
/// AUCs. `smooth` is the moving-average weight for training losses (0 draws them raw).
pub fn loss_figures(runs: &[RunCurves], x: XAxis, smooth: f64, dir: &Path) -> Result<Vec<PathBuf>> {
    let x_label = match x {
        XAxis::Epoch => "epoch",
        XAxis::Step => "step",
    };
    let mut written = save(
        &LossFigure {
            runs,
            x_label,
            smooth,
            auc: false,
        },
        dir,
        "loss",
    )?;
    if runs.iter().any(|r| !r.valid_auc.is_empty()) {
        written.extend(save(
            &LossFigure {
                runs,
                x_label,
                smooth,
                auc: true,
            },
            dir,
            "valid_auc",
        )?);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smoothing_is_bias_corrected() {
        let s = smoothed(&[(0.0, 1.0), (1.0, 1.0), (2.0, 1.0)], 0.9);
        assert!(s.iter().all(|p| (p.1 - 1.0).abs() < 1e-12), "{s:?}");
        assert_eq!(
            smoothed(&[(0.0, 3.0), (1.0, 5.0)], 0.0),
            [(0.0, 3.0), (1.0, 5.0)]
        );
    }

    #[test]
    fn run_curves_split_phases_and_average_competition_tasks() {
        use std::collections::BTreeMap;
        let rec =
            |step, phase, loss: f64, auc: Option<BTreeMap<String, Option<f64>>>| MetricRecord {
                step,
                epoch: step as f64 / 10.0,
                phase,
                loss,
                lr: None,
                images_per_s: None,
                data_wait: None,
                auc,
            };
        let mut auc: BTreeMap<String, Option<f64>> = COMPETITION_5
            .iter()
            .map(|o| (o.name().to_string(), Some(0.8)))
            .collect();
        auc.insert("Fracture".into(), None);
        auc.insert("No Finding".into(), Some(0.3));
        let records = [
            rec(1, Phase::Train, 0.7, None),
            rec(2, Phase::Train, f64::NAN, None),
            rec(10, Phase::Valid, 0.5, Some(auc)),
        ];
        let run = RunCurves::new("a", &records, XAxis::Step);
        assert_eq!(run.train, [(1.0, 0.7)]);
        assert_eq!(run.valid, [(10.0, 0.5)]);
        assert_eq!(run.non_finite, 1);
        assert_eq!(run.valid_auc.len(), 1);
        assert!(
            (run.valid_auc[0].1 - 0.8).abs() < 1e-12,
            "competition tasks only"
        );
        assert!(run.valid_auc_competition);
    }
}
