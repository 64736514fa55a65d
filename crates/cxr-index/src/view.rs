//! What a DICOM header (or a file copied from one, as MIMIC-CXR's metadata) says about the view:
//! frontal or lateral, and the projection.
//!
//! The projection is read with the manifest's own spellings ([`Projection::parse`]: `AP`, `PA`,
//! `LL`, `RL`, the values CheXpert's `AP/PA` column and NIH's `View Position` hold), and the
//! view follows from it: AP and PA films are frontal, LL and RL lateral. DICOM's `ViewPosition`
//! (0018,5101) uses those same terms; MIMIC-CXR adds `LATERAL` (and the rare `XTABLE LATERAL`,
//! a cross-table lateral), which are laterals of unknown side, as CheXpert's laterals with a
//! blank `AP/PA`. Where `ViewPosition` is blank, the coded view (`ViewCodeSequence`, whose code
//! meanings are DICOM CID 4010's `postero-anterior`, `antero-posterior`, `left lateral`, ...)
//! may tell.
//!
//! Everything else is not a view the manifest can record (it has no "unknown" view): obliques
//! (`LAO`, `RPO`, ...), decubitus films (`PA LLD`, `RLD`), angled or lordotic ones (`AP AXIAL`,
//! `SWIMMERS`), and a blank view. Those are `None`, and the indexers leave such images out
//! unless told to take them as frontal (`--unknown-view frontal`).

use cxr_core::{Projection, View};

/// What to do with an image whose view is neither frontal nor lateral (`--unknown-view`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum UnknownView {
    /// Leave it out, and count it
    #[default]
    Skip,
    /// Keep it as frontal, projection unknown (an export of chest films whose ViewPosition is
    /// blank)
    Frontal,
}

impl UnknownView {
    /// The view and projection to record for an image whose header says `found`; `None`: leave
    /// the image out.
    pub fn resolve(self, found: Option<(View, Projection)>) -> Option<(View, Projection)> {
        found.or(match self {
            UnknownView::Skip => None,
            UnknownView::Frontal => Some((View::Frontal, Projection::Unknown)),
        })
    }
}

/// The view and projection of a `ViewPosition` value (case and padding ignored).
pub fn from_view_position(text: &str) -> Option<(View, Projection)> {
    let text = text.trim();
    if ["LATERAL", "XTABLE LATERAL"]
        .iter()
        .any(|lateral| text.eq_ignore_ascii_case(lateral))
    {
        return Some((View::Lateral, Projection::Unknown));
    }
    projection_view(Projection::parse(text)?)
}

/// The view and projection of a `ViewCodeSequence` code meaning (case and padding ignored).
pub fn from_view_code_meaning(text: &str) -> Option<(View, Projection)> {
    let projection = match text.trim().to_ascii_lowercase().as_str() {
        "postero-anterior" => Projection::Pa,
        "antero-posterior" => Projection::Ap,
        "left lateral" => Projection::Ll,
        "right lateral" => Projection::Rl,
        "lateral" => return Some((View::Lateral, Projection::Unknown)),
        _ => return None,
    };
    projection_view(projection)
}

/// The view a known projection is taken in; `None` for [`Projection::Unknown`].
pub fn projection_view(projection: Projection) -> Option<(View, Projection)> {
    match projection {
        Projection::Ap | Projection::Pa => Some((View::Frontal, projection)),
        Projection::Ll | Projection::Rl => Some((View::Lateral, projection)),
        Projection::Unknown => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn view_positions_as_mimic_and_dicom_write_them() {
        let frontal = |p| Some((View::Frontal, p));
        let lateral = |p| Some((View::Lateral, p));
        assert_eq!(from_view_position("PA"), frontal(Projection::Pa));
        assert_eq!(from_view_position("AP "), frontal(Projection::Ap));
        assert_eq!(from_view_position("LL"), lateral(Projection::Ll));
        assert_eq!(from_view_position("rl"), lateral(Projection::Rl));
        assert_eq!(from_view_position("LATERAL"), lateral(Projection::Unknown));
        assert_eq!(
            from_view_position("XTABLE LATERAL"),
            lateral(Projection::Unknown)
        );
        for other in [
            "", "unknown", "AP AXIAL", "PA LLD", "LAO", "RLD", "SWIMMERS",
        ] {
            assert_eq!(from_view_position(other), None, "{other}");
        }
        assert_eq!(
            from_view_code_meaning("postero-anterior"),
            frontal(Projection::Pa)
        );
        assert_eq!(
            from_view_code_meaning("Antero-posterior"),
            frontal(Projection::Ap)
        );
        assert_eq!(
            from_view_code_meaning("left lateral"),
            lateral(Projection::Ll)
        );
        assert_eq!(
            from_view_code_meaning("lateral"),
            lateral(Projection::Unknown)
        );
        for other in ["", "left lateral decubitus", "lordotic", "Erect"] {
            assert_eq!(from_view_code_meaning(other), None, "{other}");
        }
    }
}
