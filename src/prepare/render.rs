//! Stage 2: one image's records — crop, augment (train only), encode, and wrap
//! in a `tf.train.Example` — ready for the writer to append.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use sha2::{Digest, Sha256};

use super::{
    options::PrepareOptions,
    plan::{self, ImageCache, ImagePlan},
};
use crate::{
    dataset::Sample,
    error::{Error, Result},
    patch::{augment, stain::StainNormalizer, tiling},
    shard::{example::PatchRecord, manifest::ManifestRow},
    split::Assignment,
};

/// A record ready to write; the writer fills in shard, index and offset.
pub struct Rendered {
    pub example: Vec<u8>,
    pub row: ManifestRow,
}

/// Everything about a sample that its records share.
pub struct ImageJob<'a> {
    /// The sample's index in the data set (its slot in the [`ImageCache`]).
    pub index: usize,
    pub sample: &'a Sample,
    pub label: i64,
    pub assignment: &'a Assignment,
    pub plan: &'a ImagePlan,
    pub first_record: u64,
}

/// The seed of one record's augmentation: a hash of the run seed and the
/// record's identity, so it does not depend on thread scheduling.
pub fn record_seed(seed: u64, name: &str, x: u32, y: u32, aug_index: u32) -> u64 {
    let digest = Sha256::digest(format!("{seed}/{name}/{x}/{y}/{aug_index}").as_bytes());
    u64::from_le_bytes(digest[..8].try_into().unwrap_or_default())
}

/// Renders the records of `job` whose global ids satisfy `wanted` (all of
/// them, except when resuming past finished shards). The image comes from
/// `cache` when planning kept it, else is decoded again.
pub fn render_image(
    job: &ImageJob,
    opts: &PrepareOptions,
    stain: Option<&StainNormalizer>,
    cache: &ImageCache,
    wanted: &(dyn Fn(u64) -> bool + Sync),
) -> Result<Vec<Rendered>> {
    let cached = cache.take(job.index);
    let copies = plan::copies(job.assignment.split, opts.augment);
    let ids = job.first_record..job.first_record + job.plan.patches.len() as u64 * copies as u64;
    if !ids.clone().any(wanted) {
        return Ok(Vec::new());
    }
    let mut image = match cached {
        Some(image) => image,
        None => plan::load_image(job.sample, opts)?,
    };
    if let Some(n) = stain {
        image = n.apply(&image);
    }
    let encoding = opts.encoding();
    let tasks: Vec<(u64, usize, u32)> = job
        .plan
        .patches
        .iter()
        .enumerate()
        .flat_map(|(p, _)| (0..copies).map(move |k| (p, k)))
        .zip(ids)
        .filter(|&(_, id)| wanted(id))
        .map(|((p, k), id)| (id, p, k))
        .collect();
    tasks
        .into_par_iter()
        .map(|(id, p, k)| {
            let (x, y) = job.plan.patches[p];
            let seed = record_seed(opts.seed, &job.sample.name, x, y, k);
            let mut patch = tiling::crop_reflect(&image, x, y, opts.patch_size);
            let augmentation = if k == 0 {
                "none".to_string()
            } else {
                let mut rng = ChaCha8Rng::seed_from_u64(seed);
                let (out, ops) = augment::augment(&patch, &opts.augmentation, &mut rng);
                patch = out;
                ops.join("+")
            };
            let encoded = encoding
                .encode(&patch)
                .map_err(|e| Error::image(&job.sample.image_path, e))?;
            let patch = Patch {
                id,
                x,
                y,
                aug_index: k,
                seed,
                augmentation,
                encoded,
            };
            Ok(record(job, opts, patch))
        })
        .collect()
}

/// One encoded patch and what it is.
struct Patch {
    id: u64,
    x: u32,
    y: u32,
    aug_index: u32,
    seed: u64,
    augmentation: String,
    encoded: Vec<u8>,
}

fn record(job: &ImageJob, opts: &PrepareOptions, p: Patch) -> Rendered {
    let Patch {
        id,
        x,
        y,
        aug_index,
        seed,
        augmentation,
        encoded,
    } = p;
    let s = job.sample;
    let split = job.assignment.split.as_str().to_string();
    let sha256 = hex::encode(Sha256::digest(&encoded));
    let encoded_bytes = encoded.len() as u64;
    let rec = PatchRecord {
        encoded,
        format: opts.format.as_str().to_string(),
        height: opts.patch_size as i64,
        width: opts.patch_size as i64,
        channels: 3,
        label: job.label,
        label_text: s.class.clone(),
        filename: s.rel_path.clone(),
        source_id: s.name.clone(),
        record_id: id as i64,
        patient_id: s.patient.clone().unwrap_or_default(),
        split: split.clone(),
        subset: job.assignment.subset.clone(),
        x: x as i64,
        y: y as i64,
        size: opts.patch_size as i64,
        scale: opts.scale,
        augmentation,
    };
    let example = rec.encode();
    let row = ManifestRow {
        record_id: id,
        split,
        subset: rec.subset,
        fold: job.assignment.fold.map(|f| f as i32),
        shard: String::new(),
        index_in_shard: 0,
        byte_offset: 0,
        record_bytes: example.len() as u64,
        source_image: rec.source_id,
        filename: rec.filename,
        patient: s.patient.clone(),
        label: rec.label,
        label_text: rec.label_text,
        x: rec.x,
        y: rec.y,
        size: rec.size,
        scale: rec.scale,
        augmentation: rec.augmentation,
        aug_index,
        seed,
        sha256,
        format: rec.format,
        encoded_bytes,
    };
    Rendered { example, row }
}
