//! A synthetic data set in the exact layout of the Warwick-QU / GlaS download, for
//! tests and the demo.
//!
//! [`generate`] writes `train_*.bmp`, `testA_*.bmp`, `testB_*.bmp` (24-bit RGB), one
//! `<name>_anno.bmp` gland instance mask each (8-bit, 0 = background, 1..N = glands)
//! and `Grade.csv` with the real file's quirks (header spacing, leading spaces,
//! `\r` line ends, no final newline, plain string row order, the misspelt
//! sub-grade). The pictures are procedural H&E colon mucosa in which benign and
//! malignant differ the way they do under the microscope (see `render.rs`), so a
//! classifier trained on the patches has something real to learn.
//!
//! Everything is a function of the seed: each image has its own ChaCha8 stream
//! seeded from (seed, image index), so the output is byte-identical whatever the
//! number of rayon threads.

mod field;
mod render;

use std::fmt::Write as _;
use std::fs;
use std::io::Cursor;
use std::path::Path;

use image::{ExtendedColorType, ImageFormat};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::error::{Error, IoContext, Result};
use field::mix64;
use render::{Look, render};

/// What to generate.
#[derive(Clone, Debug)]
pub struct SynthOptions {
    pub images: usize,
    pub seed: u64,
}

impl Default for SynthOptions {
    /// The real data set's size: 165 images (85 train, 60 testA, 20 testB).
    fn default() -> Self {
        SynthOptions {
            images: 165,
            seed: 0,
        }
    }
}

/// What was generated.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct SynthSummary {
    pub images: usize,
    pub benign: usize,
    pub malignant: usize,
    pub patients: usize,
}

/// The header of the real `Grade.csv`, spaces included.
pub const GRADE_HEADER: &str =
    "name,patient ID, grade (GlaS), grade (Sirinukunwattana et al. 2015)";

const SPLITS: [&str; 3] = ["train", "testA", "testB"];
const BENIGN_GRADES: [&str; 2] = ["healthy", "adenomatous"];
/// Sub-grades as the real file spells them ("differentated" is sic).
const MALIGNANT_GRADES: [&str; 3] = [
    "moderately differentiated",
    "moderately-to-poorly differentated",
    "poorly differentiated",
];
const STANDARD_SIZE: (u32, u32) = (775, 522);
const OTHER_SIZES: [(u32, u32); 2] = [(589, 453), (567, 430)];
const LARGE_SIZE: (u32, u32) = (1024, 768);

/// Writes a synthetic GlaS data set of `opts.images` images into `output`.
///
/// Creates `output` if needed and refuses a folder that already holds a `Grade.csv`.
/// Images and masks are written first (in parallel) and `Grade.csv` last, through a
/// temporary name and a rename, so a folder with a `Grade.csv` is complete.
pub fn generate(output: &Path, opts: &SynthOptions) -> Result<SynthSummary> {
    if opts.images == 0 {
        return Err(Error::Config(
            "synth: the number of images must be at least 1".into(),
        ));
    }
    crate::atomic::check_folder(output)?;
    let grade_path = output.join("Grade.csv");
    if grade_path.try_exists().at(&grade_path)? {
        return Err(Error::output(
            output,
            "already holds a data set; choose an empty folder",
        ));
    }
    let items = plan(opts);
    // Nothing already there is replaced: a file of a name synth writes is refused.
    let taken: Vec<String> = items
        .iter()
        .flat_map(|item| {
            [
                format!("{}.bmp", item.name),
                format!("{}_anno.bmp", item.name),
            ]
        })
        .filter(|name| fs::symlink_metadata(output.join(name)).is_ok())
        .collect();
    if let Some(first) = taken.first() {
        return Err(Error::output(
            output,
            format!(
                "already holds {first} (and {} more files synth would write); choose an empty folder",
                taken.len() - 1
            ),
        ));
    }
    fs::create_dir_all(output).at(output)?;
    items
        .par_iter()
        .try_for_each(|item| write_item(output, item))?;
    crate::atomic::write(&grade_path, grade_csv(&items).as_bytes())?;
    Ok(summarise(&items))
}

/// One image to generate.
#[derive(Clone, Debug)]
struct Item {
    name: String,
    /// Index into [`SPLITS`].
    split: usize,
    malignant: bool,
    subgrade: &'static str,
    /// 1-based.
    patient: usize,
    look: Look,
}

/// Images per split: 85/60/20 for 165, proportional otherwise, at least one each
/// from three images on.
fn split_sizes(n: usize) -> [usize; 3] {
    let round = |num: usize| (2 * n * num + 165) / 330;
    let train = round(85).min(n);
    let test_a = round(60).min(n - train);
    let mut sizes = [train, test_a, n - train - test_a];
    if n >= 3 {
        for k in 0..3 {
            while sizes[k] == 0 {
                let largest = (0..3).max_by_key(|&j| (sizes[j], 3 - j)).unwrap_or(0);
                sizes[largest] -= 1;
                sizes[k] += 1;
            }
        }
    }
    sizes
}

/// Benign images in a split of `n`: the real proportions (train 37/85, test
/// 37/80), at least one of each class when the split has two images or more.
fn benign_count(split: usize, n: usize) -> usize {
    match n {
        0 => 0,
        1 => usize::from(split == 1),
        _ => {
            let (num, den) = if split == 0 { (37, 85) } else { (37, 80) };
            ((2 * n * num + den) / (2 * den)).clamp(1, n - 1)
        }
    }
}

fn pick<'a>(rng: &mut ChaCha8Rng, options: &[&'a str], weights: &[f32]) -> &'a str {
    let total: f32 = weights.iter().sum();
    let mut u = rng.random::<f32>() * total;
    for (o, w) in options.iter().zip(weights) {
        if u < *w {
            return o;
        }
        u -= w;
    }
    options[options.len() - 1]
}

const BENIGN_WEIGHTS: [f32; 2] = [0.45, 0.55];
const MALIGNANT_WEIGHTS: [f32; 3] = [0.55, 0.2, 0.25];
/// How often an image has its patient's usual sub-grade.
const PREFERRED_SUBGRADE: f32 = 0.6;

/// Decides every image's name, split, class, sub-grade, patient and size.
fn plan(opts: &SynthOptions) -> Vec<Item> {
    let n = opts.images;
    let mut rng = ChaCha8Rng::seed_from_u64(mix64(opts.seed ^ 0x6c61_796f_7574));
    let sizes = split_sizes(n);

    // (split, number, malignant) in canonical order; classes shuffled within a split.
    let mut slots: Vec<(usize, usize, bool)> = Vec::with_capacity(n);
    for (split, &count) in sizes.iter().enumerate() {
        let benign = benign_count(split, count);
        let mut classes: Vec<bool> = (0..count).map(|i| i >= benign).collect();
        classes.shuffle(&mut rng);
        slots.extend(
            classes
                .into_iter()
                .enumerate()
                .map(|(i, m)| (split, i + 1, m)),
        );
    }

    // Patients: each leans to one grade; a few ("mixed") also have the other.
    let patients = (n / 6).clamp(2, 16);
    let benign_patients = ((patients as f32 * 0.45).round() as usize).clamp(1, patients - 1);
    let mut order: Vec<usize> = (0..patients).collect();
    order.shuffle(&mut rng);
    let mut dominant_malignant = vec![true; patients];
    for &p in &order[..benign_patients] {
        dominant_malignant[p] = false;
    }
    order.shuffle(&mut rng);
    let mut mixed = vec![false; patients];
    for &p in &order[..patients / 6] {
        mixed[p] = true;
    }
    let benign_pref: Vec<&str> = (0..patients)
        .map(|_| pick(&mut rng, &BENIGN_GRADES, &BENIGN_WEIGHTS))
        .collect();
    let malignant_pref: Vec<&str> = (0..patients)
        .map(|_| pick(&mut rng, &MALIGNANT_GRADES, &MALIGNANT_WEIGHTS))
        .collect();
    let patient_size: Vec<(u32, u32)> = (0..patients)
        .map(|_| {
            let u = rng.random::<f32>();
            if u < 0.72 {
                STANDARD_SIZE
            } else if u < 0.86 {
                OTHER_SIZES[0]
            } else {
                OTHER_SIZES[1]
            }
        })
        .collect();
    let weight = |p: usize, malignant: bool| {
        if dominant_malignant[p] == malignant {
            1.0
        } else if mixed[p] {
            0.35
        } else {
            0.0
        }
    };
    // Balanced assignment: the patient with the fewest images of this grade per
    // unit weight gets the next one (a little jitter keeps it from being cyclic).
    let mut assigned = vec![0usize; n];
    let mut counts = vec![[0usize; 2]; patients];
    let mut visit: Vec<usize> = (0..n).collect();
    visit.shuffle(&mut rng);
    for &i in &visit {
        let m = slots[i].2;
        let mut best = (f32::INFINITY, 0usize);
        for (p, count) in counts.iter().enumerate() {
            let w = weight(p, m);
            if w > 0.0 {
                let score = (count[usize::from(m)] as f32 + 1.0) / w + rng.random::<f32>() * 0.3;
                if score < best.0 {
                    best = (score, p);
                }
            }
        }
        assigned[i] = best.1;
        counts[best.1][usize::from(m)] += 1;
    }

    slots
        .iter()
        .enumerate()
        .map(|(i, &(split, number, malignant))| {
            let p = assigned[i];
            let subgrade = if malignant {
                if rng.random::<f32>() < PREFERRED_SUBGRADE {
                    malignant_pref[p]
                } else {
                    pick(&mut rng, &MALIGNANT_GRADES, &MALIGNANT_WEIGHTS)
                }
            } else if rng.random::<f32>() < PREFERRED_SUBGRADE {
                benign_pref[p]
            } else {
                pick(&mut rng, &BENIGN_GRADES, &BENIGN_WEIGHTS)
            };
            let (lo, hi) = match subgrade {
                "healthy" => (0.0, 0.1),
                "adenomatous" => (0.1, 0.25),
                "moderately differentiated" => (0.5, 0.7),
                "moderately-to-poorly differentated" => (0.65, 0.85),
                _ => (0.82, 1.0),
            };
            let atypia = lo + (hi - lo) * rng.random::<f32>();
            let (width, height) = if rng.random::<f32>() < 0.05 {
                LARGE_SIZE
            } else {
                patient_size[p]
            };
            Item {
                name: format!("{}_{}", SPLITS[split], number),
                split,
                malignant,
                subgrade,
                patient: p + 1,
                look: Look {
                    width,
                    height,
                    malignant,
                    atypia,
                    healthy: subgrade == "healthy",
                    seed: mix64(opts.seed ^ mix64(i as u64 + 1)),
                    stain_seed: mix64(opts.seed ^ mix64(0x7374_6169_6e00 + p as u64)),
                },
            }
        })
        .collect()
}

fn summarise(items: &[Item]) -> SynthSummary {
    let malignant = items.iter().filter(|i| i.malignant).count();
    let mut patients: Vec<usize> = items.iter().map(|i| i.patient).collect();
    patients.sort_unstable();
    patients.dedup();
    SynthSummary {
        images: items.len(),
        benign: items.len() - malignant,
        malignant,
        patients: patients.len(),
    }
}

/// `Grade.csv` as the real file has it: `\r` line ends, no final newline, rows in
/// plain string order of the name.
fn grade_csv(items: &[Item]) -> String {
    let mut rows: Vec<&Item> = items.iter().collect();
    rows.sort_by(|a, b| a.name.cmp(&b.name));
    let mut out = String::from(GRADE_HEADER);
    for item in rows {
        let grade = if item.malignant {
            "malignant"
        } else {
            "benign"
        };
        // Writing to a String cannot fail.
        let _ = write!(
            out,
            "\r{},{}, {}, {}",
            item.name, item.patient, grade, item.subgrade
        );
    }
    out
}

/// Renders one image and writes it and its mask.
fn write_item(dir: &Path, item: &Item) -> Result<()> {
    let image_path = dir.join(format!("{}.bmp", item.name));
    let mask_path = dir.join(format!("{}_anno.bmp", item.name));
    let r = render(&item.look);
    tracing::debug!(
        image = %item.name,
        split = SPLITS[item.split],
        glands = r.glands,
        "synth: rendered"
    );
    let (w, h) = (item.look.width, item.look.height);
    let image = encode_bmp(&r.rgb, w, h, ExtendedColorType::Rgb8)
        .map_err(|e| Error::image(&image_path, e))?;
    let mask = encode_bmp(&r.mask, w, h, ExtendedColorType::L8)
        .map_err(|e| Error::image(&mask_path, e))?;
    for (path, bytes) in [(&image_path, image), (&mask_path, mask)] {
        // A new file only (checked above, and again here by O_EXCL): never
        // written through a link or into something already there.
        fs::File::options()
            .write(true)
            .create_new(true)
            .open(path)
            .and_then(|mut f| std::io::Write::write_all(&mut f, &bytes))
            .at(path)?;
    }
    Ok(())
}

/// A BMP in memory: 24-bit for RGB, 8-bit with a grey palette for L8 (what
/// `image` writes for Luma8, and what the real `_anno.bmp` files are).
fn encode_bmp(pixels: &[u8], w: u32, h: u32, color: ExtendedColorType) -> Result<Vec<u8>, String> {
    let mut buf = Cursor::new(Vec::new());
    image::write_buffer_with_format(&mut buf, pixels, w, h, color, ImageFormat::Bmp)
        .map_err(|e| format!("cannot encode as BMP: {e}"))?;
    Ok(buf.into_inner())
}

#[cfg(test)]
mod tests;
