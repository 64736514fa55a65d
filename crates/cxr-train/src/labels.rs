//! Training targets: from the manifest's raw label states to per-head targets and masks.
//!
//! The manifest stores what each report said, never a policy, so the uncertainty policy
//! (`--policy`, `--blank`) is applied here, once per run. Every head gets a dense target matrix
//! and a mask of the same shape: a masked entry (U-Ignore, unknown sex, missing age, a lateral
//! image in the view task) contributes neither to the loss nor to the validation AUC.

use cxr_core::{sex_target, view_target, LabelPolicy, ManifestRow, Observation};
use cxr_models::HeadSpec;

use crate::config::Task;

/// The loss a head is trained with.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LossKind {
    /// Masked binary cross-entropy on logits.
    Bce,
    /// Masked smooth L1 (PyTorch's default beta = 1) on the regression target.
    SmoothL1,
}

/// Age is regressed as `age / AGE_SCALE`, keeping the target near the scale of the logits so
/// that the smooth L1 loss sits in its quadratic region for typical errors.
pub const AGE_SCALE: f64 = 100.0;

/// One head of the model: its task, loss weight, output names and targets.
#[derive(Debug, Clone)]
pub struct HeadTask {
    pub task: Task,
    pub weight: f64,
    /// Output (column) names: observation names, or the task name for one-output heads.
    pub columns: Vec<String>,
    observations: Vec<Observation>,
    policy: LabelPolicy,
}

impl HeadTask {
    pub fn new(
        task: Task,
        weight: f64,
        observations: &[Observation],
        policy: &LabelPolicy,
    ) -> Self {
        let (columns, observations) = match task {
            Task::Pathologies => (
                observations.iter().map(|o| o.name().to_string()).collect(),
                observations.to_vec(),
            ),
            _ => (vec![task.name().to_string()], Vec::new()),
        };
        HeadTask {
            task,
            weight,
            columns,
            observations,
            policy: policy.clone(),
        }
    }

    pub fn outputs(&self) -> usize {
        self.columns.len()
    }

    pub fn loss(&self) -> LossKind {
        match self.task {
            Task::Age => LossKind::SmoothL1,
            _ => LossKind::Bce,
        }
    }

    /// The model head for this task.
    pub fn spec(&self) -> HeadSpec {
        match self.task {
            Task::Pathologies => HeadSpec::with_classes(self.task.name(), self.columns.clone()),
            _ => HeadSpec::new(self.task.name(), 1),
        }
    }

    /// Write this head's targets and mask (1 = counts) for `row` into the given slices.
    pub fn targets(&self, row: &ManifestRow, values: &mut [f32], mask: &mut [f32]) {
        let mut set = |k: usize, v: Option<f32>| {
            values[k] = v.unwrap_or(0.0);
            mask[k] = if v.is_some() { 1.0 } else { 0.0 };
        };
        match self.task {
            Task::Pathologies => {
                for (k, &o) in self.observations.iter().enumerate() {
                    let t = self.policy.target(o, row.label(o));
                    set(k, t.known.then_some(t.value));
                }
            }
            Task::Sex => set(0, sex_target(row.sex).map(f32::from)),
            Task::Age => set(0, row.age.map(|a| (a as f64 / AGE_SCALE) as f32)),
            Task::View => set(0, view_target(row.projection).map(f32::from)),
        }
    }

    /// A model output as written to a predictions file: a probability for BCE heads, years for
    /// age.
    pub fn score(&self, logit: f32) -> f64 {
        match self.loss() {
            LossKind::Bce => 1.0 / (1.0 + (-(logit as f64)).exp()),
            LossKind::SmoothL1 => logit as f64 * AGE_SCALE,
        }
    }
}

/// Dense targets and masks of every head for a list of manifest rows.
#[derive(Debug, Clone)]
pub struct Targets {
    /// Per head: `values[h]` is `[rows, outputs]` row-major.
    pub values: Vec<Vec<f32>>,
    pub masks: Vec<Vec<f32>>,
}

impl Targets {
    pub fn build(heads: &[HeadTask], rows: &[&ManifestRow]) -> Targets {
        let mut values = Vec::with_capacity(heads.len());
        let mut masks = Vec::with_capacity(heads.len());
        for head in heads {
            let k = head.outputs();
            let mut v = vec![0f32; rows.len() * k];
            let mut m = vec![0f32; rows.len() * k];
            for (i, row) in rows.iter().enumerate() {
                head.targets(row, &mut v[i * k..(i + 1) * k], &mut m[i * k..(i + 1) * k]);
            }
            values.push(v);
            masks.push(m);
        }
        Targets { values, masks }
    }
}
