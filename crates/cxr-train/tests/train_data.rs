//! Label policy to targets and masks, and the determinism of batches and augmentation.

mod train_fixture;

use cxr_core::{BlankRule, LabelPolicy, LabelState, Manifest, Observation, Projection, Sex, Split};
use cxr_train::config::{AugmentConfig, CropConfig, Normalisation, Task};
use cxr_train::data::{epoch_order, prefetch_epoch, Filter, Samples, ShardSet};
use cxr_train::labels::HeadTask;
use std::sync::Arc;

#[test]
fn label_policies_give_targets_and_masks() {
    let atel = Observation::parse("Atelectasis").unwrap();
    let edema = Observation::parse("Edema").unwrap();
    let mut row = train_fixture::row(0);
    row.labels[atel.index()] = LabelState::Uncertain;
    row.labels[edema.index()] = LabelState::NotMentioned;
    let obs = [atel, edema];
    let targets = |policy: &str, blank| {
        let head = HeadTask::new(
            Task::Pathologies,
            1.0,
            &obs,
            &LabelPolicy::parse(policy, blank).unwrap(),
        );
        let (mut v, mut m) = ([9f32; 2], [9f32; 2]);
        head.targets(&row, &mut v, &mut m);
        (v, m)
    };
    assert_eq!(
        targets("u-ignore", BlankRule::Negative),
        ([0.0, 0.0], [0.0, 1.0])
    );
    assert_eq!(
        targets("u-ones", BlankRule::Negative),
        ([1.0, 0.0], [1.0, 1.0])
    );
    assert_eq!(
        targets("u-zeros", BlankRule::Ignore),
        ([0.0, 0.0], [1.0, 0.0])
    );
    assert_eq!(
        targets("u-zeros,Atelectasis=u-ones", BlankRule::Ignore),
        ([1.0, 0.0], [1.0, 0.0])
    );

    let policy = LabelPolicy::default();
    let one = |task, row: &cxr_core::ManifestRow| {
        let (mut v, mut m) = ([9f32], [9f32]);
        HeadTask::new(task, 1.0, &[], &policy).targets(row, &mut v, &mut m);
        (v[0], m[0])
    };
    row.sex = Sex::Male;
    row.projection = Projection::Pa;
    row.age = Some(63);
    assert_eq!(one(Task::Sex, &row), (1.0, 1.0));
    assert_eq!(one(Task::View, &row), (1.0, 1.0));
    assert_eq!(one(Task::Age, &row), (0.63, 1.0));
    row.sex = Sex::Unknown;
    row.projection = Projection::Ll;
    row.age = None;
    assert_eq!(one(Task::Sex, &row), (0.0, 0.0));
    assert_eq!(one(Task::View, &row), (0.0, 0.0));
    assert_eq!(one(Task::Age, &row), (0.0, 0.0));
    row.projection = Projection::Ap;
    row.sex = Sex::Female;
    assert_eq!(one(Task::View, &row), (0.0, 1.0));
    assert_eq!(one(Task::Sex, &row), (0.0, 1.0));
}

fn samples(dir: &std::path::Path) -> Arc<Samples> {
    let (manifest_path, shard_dir) = train_fixture::dataset(dir, 40, 16);
    let manifest = Manifest::read(&manifest_path).unwrap();
    let set = Arc::new(ShardSet::open(&shard_dir, &manifest).unwrap());
    let filter = Filter {
        split: Split::Train,
        frontal_only: true,
        projections: vec![],
    };
    let heads = [HeadTask::new(Task::View, 1.0, &[], &LabelPolicy::default())];
    Arc::new(Samples::select(set, &manifest, &filter, &heads))
}

#[test]
fn batches_and_augmentation_are_pure_functions_of_seed_epoch_and_position() {
    let dir = tempfile::tempdir().unwrap();
    let samples = samples(dir.path());
    assert_eq!(samples.len(), 24); // rows with i % 5 in {2, 3, 4}
    let order = epoch_order(samples.len(), 1, 0);
    assert_eq!(order, epoch_order(samples.len(), 1, 0));
    assert_ne!(order, epoch_order(samples.len(), 1, 1));
    assert_ne!(order, epoch_order(samples.len(), 2, 0));
    let mut sorted = order.clone();
    sorted.sort();
    assert_eq!(sorted, (0..samples.len()).collect::<Vec<_>>());

    let augment = AugmentConfig {
        crop: CropConfig::Resized { min_scale: 0.7 },
        hflip: true,
        rotate_deg: 10.0,
        brightness: 0.1,
        contrast: 0.1,
    };
    let norm = Normalisation::imagenet(1);
    let a = samples.batch(&[3, 5, 7], Some((&augment, 1, 0)), &norm);
    let b = samples.batch(&[3, 5, 7], Some((&augment, 1, 0)), &norm);
    assert_eq!(a.images, b.images);
    // A sample's augmentation does not depend on its batch-mates or its place in the batch.
    let c = samples.batch(&[7, 1], Some((&augment, 1, 0)), &norm);
    let per = train_fixture::SIZE * train_fixture::SIZE;
    assert_eq!(&a.images[2 * per..], &c.images[..per]);
    // Another epoch draws another augmentation; no augmentation is the plain normalisation.
    let d = samples.batch(&[3], Some((&augment, 1, 1)), &norm);
    assert_ne!(&a.images[..per], &d.images[..]);
    let plain = samples.batch(&[3], None, &norm);
    assert_ne!(plain.images, d.images);
    assert_eq!(a.targets[0].len(), 3);

    // The prefetching loader yields exactly the batches of the epoch's order, resumable mid-epoch.
    let rx = prefetch_epoch(samples.clone(), augment, norm.clone(), 1, 0, 8, 1);
    let batches: Vec<_> = rx.iter().collect();
    assert_eq!(batches.len(), 2);
    let direct = samples.batch(&order[8..16], Some((&augment, 1, 0)), &norm);
    assert_eq!(batches[0].images, direct.images);
    assert_eq!(batches[0].targets, direct.targets);
}

#[test]
fn shards_from_another_manifest_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (_, shard_dir) = train_fixture::dataset(dir.path(), 20, 8);
    let other = Manifest {
        rows: (0..21).map(train_fixture::row).collect(),
    };
    let err = ShardSet::open(&shard_dir, &other)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("manifest"), "{err}");
}

/// `bench --loader` times whole batches of the training split, as many images as asked.
#[test]
fn the_loader_bench_builds_the_batches_it_times() {
    let dir = tempfile::tempdir().unwrap();
    let (manifest, shards) = train_fixture::dataset(dir.path(), 40, 16);
    let opts = cxr_train::bench::LoaderOptions {
        shards,
        manifest,
        batch: 8,
        batches: 5,
        warmup: 1,
        in_channels: 3,
        augment: AugmentConfig {
            crop: CropConfig::Resized { min_scale: 0.8 },
            hflip: true,
            ..AugmentConfig::none()
        },
    };
    let report = cxr_train::bench::loader(&opts).unwrap();
    assert_eq!((report.batch, report.batches, report.size), (8, 5, 32));
    assert_eq!(report.images, 5 * 8, "every timed batch is whole");
    assert!(report.images_per_s > 0.0 && report.images_per_s_per_thread > 0.0);
    let too_big = cxr_train::bench::LoaderOptions {
        batch: 1000,
        ..opts
    };
    let err = cxr_train::bench::loader(&too_big).unwrap_err().to_string();
    assert!(err.contains("fewer than one batch of 1000"), "{err}");
}
