//! `histoshard predict`: a trained run on new whole images. Each image is
//! tiled exactly as `prepare` tiled the training data (scale, patch size,
//! stride, edge policy, tissue threshold, stain normalisation), every tissue
//! patch is classified, and the patch probabilities are averaged into the
//! image's label — the same aggregation `evaluate` reports as "mean". One
//! difference: where `prepare` dropped the strip at the right and bottom
//! edges, `predict` shifts a last patch flush with the edge, so every pixel
//! is classified.
//!
//! The preprocessing comes from the run's `preprocessing.json` (written by
//! `train` and `export`), so a run folder is all a user needs.

use std::path::{Path, PathBuf};

use burn::tensor::{Device, Tensor, TensorData, activation::softmax};
use image::{Rgb, RgbImage};
use serde::{Deserialize, Serialize};

use super::{
    data::{Normalization, to_chw},
    error::TrainResult,
    learner::{BEST_MODEL, RunInfo, load_model},
    models::Model,
};
use crate::{
    dataset::image_io,
    error::Error,
    patch::{
        stain::{StainMethod, StainNormalizer},
        tiling::{self, EdgePolicy},
        tissue::{self, Coverage},
    },
};

pub const PREPROCESSING_JSON: &str = "preprocessing.json";

/// How images become model inputs, and what the outputs mean: everything a
/// user of the model (here, or in PyTorch after `export`) must repeat.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Preprocessing {
    pub patch_size: u32,
    pub stride: u32,
    /// Resize factor applied to the whole image before tiling.
    pub scale: f32,
    pub edge: EdgePolicy,
    /// Patches with less tissue (Otsu on optical density) are not classified.
    pub min_tissue: f32,
    pub stain_normalize: Option<StainMethod>,
    pub stain_reference: Option<PathBuf>,
    /// Side patches are resized to before the model, if not `patch_size`.
    pub input_size: Option<u32>,
    /// `(pixel / 255 − mean) / std`, per RGB channel, NCHW.
    pub normalization: Normalization,
    /// Output index → class name.
    pub classes: Vec<String>,
    /// How patch probabilities become an image's: their mean.
    pub aggregation: String,
}

impl Preprocessing {
    /// Built from the data folder's `prepare.json` and the run's model.
    pub fn from_run(info: &RunInfo) -> Result<Self, Error> {
        let path = info.data.join("prepare.json");
        let text = crate::fsutil::read_text_limited(
            &path,
            crate::prepare::MAX_REPORT_BYTES,
            "a prepare.json",
        )?;
        let report: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| Error::input(&path, e.to_string()))?;
        let c = &report["config"];
        fn field<T: serde::de::DeserializeOwned>(
            c: &serde_json::Value,
            k: &str,
            path: &Path,
        ) -> Result<T, Error> {
            serde_json::from_value(c[k].clone())
                .map_err(|e| Error::input(path, format!("config.{k}: {e}")))
        }
        let classes: Vec<String> = serde_json::from_value(report["classes"].clone())
            .map_err(|e| Error::input(&path, format!("classes: {e}")))?;
        Ok(Self {
            patch_size: field(c, "patch_size", &path)?,
            stride: field(c, "stride", &path)?,
            scale: field(c, "scale", &path)?,
            edge: field(c, "edge", &path)?,
            min_tissue: field(c, "min_tissue", &path)?,
            stain_normalize: field(c, "stain_normalize", &path)?,
            stain_reference: field(c, "stain_reference", &path)?,
            input_size: info.config.model.input_size(),
            normalization: info.config.model.normalization(),
            classes,
            aggregation: "mean".into(),
        })
    }

    pub fn load(run: &Path) -> Result<Self, Error> {
        let path = run.join(PREPROCESSING_JSON);
        let text = crate::fsutil::read_text_limited(
            &path,
            super::learner::MAX_RUN_JSON_BYTES,
            "a preprocessing.json",
        )?;
        serde_json::from_str(&text).map_err(|e| Error::input(&path, e.to_string()))
    }

    pub fn save(&self, run: &Path) -> Result<(), Error> {
        let path = run.join(PREPROCESSING_JSON);
        let text =
            serde_json::to_string_pretty(self).map_err(|e| Error::output(&path, e.to_string()))?;
        crate::atomic::write(&path, text.as_bytes())
    }
}

/// One classified patch, in the scaled image's pixels.
#[derive(Clone, Debug, Serialize)]
pub struct PatchPrediction {
    pub x: u32,
    pub y: u32,
    pub probabilities: Vec<f64>,
}

/// One image's outcome.
#[derive(Clone, Debug, Serialize)]
pub struct ImagePrediction {
    pub path: PathBuf,
    /// Index into `classes`; `None` when no patch had enough tissue.
    pub label: Option<usize>,
    pub label_text: String,
    /// Mean class probabilities over the patches.
    pub probabilities: Vec<f64>,
    pub patches: Vec<PatchPrediction>,
    /// Candidate patches left out for too little tissue.
    pub background_patches: usize,
}

/// A trained model and how to feed it.
pub struct Predictor {
    model: Model,
    pre: Preprocessing,
    stain: Option<StainNormalizer>,
    device: Device,
    batch_size: usize,
}

impl Predictor {
    /// The run's best checkpoint (or `checkpoint`) on `device`.
    pub fn open(
        run: &Path,
        checkpoint: Option<&Path>,
        device: &Device,
        batch_size: usize,
    ) -> TrainResult<Self> {
        let info = RunInfo::load(run)?;
        let pre = match Preprocessing::load(run) {
            Ok(p) => p,
            Err(_) => Preprocessing::from_run(&info)?,
        };
        let path = checkpoint.map_or_else(|| run.join(BEST_MODEL), Path::to_path_buf);
        let model = load_model(info.config.model.init(device), &path)?;
        let stain = match (pre.stain_normalize, &pre.stain_reference) {
            (None, _) => None,
            (Some(m), None) => Some(StainNormalizer::builtin(m)),
            (Some(m), Some(r)) => Some(
                StainNormalizer::fit(m, &image_io::decode_rgb(r, Default::default())?)
                    .map_err(|e| Error::input(r, format!("cannot fit stain normalisation: {e}")))?,
            ),
        };
        Ok(Self {
            model,
            pre,
            stain,
            device: device.clone(),
            batch_size: batch_size.max(1),
        })
    }

    pub fn preprocessing(&self) -> &Preprocessing {
        &self.pre
    }

    /// The working-scale image (stain-normalised) that patches are cut from.
    pub fn working_image(&self, path: &Path) -> Result<RgbImage, Error> {
        let limits = image_io::DecodeLimits::default();
        let scale = self.pre.scale;
        let mut img = image_io::decode_rgb_checked(path, limits, &|w, h| {
            let size = tiling::scaled_size(w, h, scale);
            image_io::check_scaled(path, (w, h), size, scale, limits.max_pixels)
        })?;
        if (self.pre.scale - 1.0).abs() > f32::EPSILON {
            img = tiling::resize(&img, self.pre.scale);
        }
        if let Some(n) = &self.stain {
            img = n.apply(&img);
        }
        Ok(img)
    }

    /// Tiles, classifies and aggregates one image.
    pub fn predict(&self, path: &Path) -> TrainResult<(ImagePrediction, RgbImage)> {
        let img = self.working_image(path)?;
        let p = &self.pre;
        let (w, h) = img.dimensions();
        // `shift` rather than `drop` at the edges: the same full patches, but
        // the heatmap then covers the whole image.
        let edge = match p.edge {
            EdgePolicy::Drop => EdgePolicy::Shift,
            other => other,
        };
        let mut grid = tiling::grid(w, h, p.patch_size, p.stride, edge);
        if grid.is_empty() {
            // Smaller than a patch: one reflect-padded patch, as `--edge pad` would cut.
            grid.push((0, 0));
        }
        let tissue = Coverage::new(&tissue::tissue_mask(&img));
        let candidates = grid.len();
        let kept: Vec<(u32, u32)> = grid
            .into_iter()
            .filter(|&(x, y)| tissue.fraction(x, y, p.patch_size) >= p.min_tissue)
            .collect();
        let k = p.classes.len().max(2);
        let mut patches = Vec::with_capacity(kept.len());
        for chunk in kept.chunks(self.batch_size) {
            let side = p.input_size.unwrap_or(p.patch_size) as usize;
            let mut x = Vec::with_capacity(chunk.len() * 3 * side * side);
            for &(px, py) in chunk {
                let mut crop = tiling::crop_reflect(&img, px, py, p.patch_size);
                if side != p.patch_size as usize {
                    crop = image::imageops::resize(
                        &crop,
                        side as u32,
                        side as u32,
                        image::imageops::FilterType::Triangle,
                    );
                }
                x.extend(to_chw(&crop, &p.normalization));
            }
            let t = Tensor::<4>::from_data(
                TensorData::new(x, [chunk.len(), 3, side, side]),
                &self.device,
            );
            let probs: Vec<f32> = softmax(self.model.forward(t), 1)
                .into_data()
                .try_to_vec::<f32>()
                .map_err(|e| Error::Config(format!("unexpected logits: {e:?}")))?;
            for (&(px, py), row) in chunk.iter().zip(probs.chunks(k)) {
                patches.push(PatchPrediction {
                    x: px,
                    y: py,
                    probabilities: row.iter().map(|&v| v as f64).collect(),
                });
            }
        }
        let mut mean = vec![0.0; k];
        for q in &patches {
            for (m, v) in mean.iter_mut().zip(&q.probabilities) {
                *m += v / patches.len() as f64;
            }
        }
        let label = (!patches.is_empty()).then(|| super::metrics::argmax(&mean));
        let prediction = ImagePrediction {
            path: path.to_path_buf(),
            label,
            label_text: label
                .and_then(|l| p.classes.get(l).cloned())
                .unwrap_or_else(|| "no tissue".into()),
            probabilities: mean,
            background_patches: candidates - patches.len(),
            patches,
        };
        Ok((prediction, img))
    }
}

/// Rows under the image for the colour bar and the legend.
pub const LEGEND_HEIGHT: u32 = 62;
/// The narrowest heatmap (room for the colour bar and its legend).
pub const LEGEND_WIDTH: u32 = 260;

/// The working image with each classified patch tinted by its probability of
/// `class` (blue 0 → red 1), a colour bar and a legend underneath.
pub fn heatmap(
    img: &RgbImage,
    prediction: &ImagePrediction,
    class: usize,
    patch: u32,
    class_name: &str,
) -> RgbImage {
    use crate::inspect::text::{self, SMALL};
    let (w, h) = img.dimensions();
    // Overlapping patches: average the probabilities that cover each pixel.
    let mut sum = vec![0f32; (w * h) as usize];
    let mut count = vec![0u16; (w * h) as usize];
    for q in &prediction.patches {
        let v = q.probabilities.get(class).copied().unwrap_or(0.0) as f32;
        for y in q.y..(q.y + patch).min(h) {
            for x in q.x..(q.x + patch).min(w) {
                let i = (y * w + x) as usize;
                sum[i] += v;
                count[i] = count[i].saturating_add(1);
            }
        }
    }
    // Colour bar with ticks, then two lines of text under it.
    let legend_h = LEGEND_HEIGHT;
    let width = w.max(LEGEND_WIDTH);
    let mut out = RgbImage::from_pixel(width, h + legend_h, Rgb([255, 255, 255]));
    for (x, y, p) in img.enumerate_pixels() {
        let i = (y * w + x) as usize;
        let px = if count[i] > 0 {
            let c = colormap(sum[i] / count[i] as f32);
            // Grey the tissue underneath so the colour reads as the probability.
            let g = (p[0] as f32 * 0.3 + p[1] as f32 * 0.59 + p[2] as f32 * 0.11) / 255.0;
            Rgb(std::array::from_fn(|k| {
                (0.55 * c[k] as f32 + 0.45 * g * 255.0).round() as u8
            }))
        } else {
            // Not classified (background): washed out.
            Rgb(std::array::from_fn(|k| (p[k] as u16 / 3 + 170) as u8))
        };
        out.put_pixel(x, y, px);
    }
    // Colour bar 0 → 1 with ticks.
    let (bx, by, bw, bh) = (10u32, h + 8, 200u32, 10u32);
    for x in 0..bw {
        let c = colormap(x as f32 / (bw - 1) as f32);
        for y in by..by + bh {
            out.put_pixel(bx + x, y, c);
        }
    }
    let ink = Rgb([30, 30, 30]);
    let line = text::line_height(SMALL);
    for (t, label) in [(0.0, "0"), (0.5, "0.5"), (1.0, "1")] {
        let x = bx + (t * (bw - 1) as f32) as u32;
        let half = text::text_width(label, SMALL) / 2;
        text::draw_text(
            &mut out,
            i64::from(x) - i64::from(half),
            (by + bh + 2).into(),
            label,
            SMALL,
            ink,
        );
    }
    let title = format!(
        "P({class_name}) per patch - image: {} {:.2}",
        prediction.label_text,
        prediction.probabilities.get(class).copied().unwrap_or(0.0)
    );
    let text_w = width.saturating_sub(bx + 4);
    let (t1, t2) = (by + bh + 2 + line, by + bh + 2 + 2 * line);
    text::draw_text(
        &mut out,
        bx.into(),
        t1.into(),
        &text::fit(&title, text_w, SMALL),
        SMALL,
        ink,
    );
    text::draw_text(
        &mut out,
        bx.into(),
        t2.into(),
        &text::fit("pale: background, not classified", text_w, SMALL),
        SMALL,
        Rgb([110, 110, 110]),
    );
    out
}

/// Writes `DIR/<image stem>.heatmap.png` for `prediction` (atomically) and
/// returns its path.
pub fn write_heatmap(
    dir: &Path,
    img: &RgbImage,
    prediction: &ImagePrediction,
    class: usize,
    patch: u32,
    class_name: &str,
) -> Result<PathBuf, Error> {
    let stem = prediction
        .path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let out = dir.join(format!("{stem}.heatmap.png"));
    let png = crate::inspect::sheet::encode_png(
        &heatmap(img, prediction, class, patch, class_name),
        &out,
        "predict",
    )?;
    crate::atomic::write(&out, &png)?;
    Ok(out)
}

/// Blue → white → red, so 0.5 (undecided) reads as neither.
fn colormap(v: f32) -> Rgb<u8> {
    let v = v.clamp(0.0, 1.0);
    let (lo, mid, hi) = (
        [59.0, 76.0, 192.0],
        [221.0, 221.0, 221.0],
        [180.0, 4.0, 38.0],
    );
    let (a, b, t) = if v < 0.5 {
        (lo, mid, v * 2.0)
    } else {
        (mid, hi, (v - 0.5) * 2.0)
    };
    Rgb(std::array::from_fn(|k| {
        (a[k] + (b[k] - a[k]) * t).round() as u8
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colormap_ends_and_middle() {
        assert_eq!(colormap(0.0), Rgb([59, 76, 192]));
        assert_eq!(colormap(0.5), Rgb([221, 221, 221]));
        assert_eq!(colormap(1.0), Rgb([180, 4, 38]));
        assert_eq!(colormap(7.0), colormap(1.0));
    }

    #[test]
    fn heatmap_colours_only_classified_patches() {
        let img = RgbImage::from_pixel(64, 32, Rgb([200, 100, 150]));
        let prediction = ImagePrediction {
            path: "x.png".into(),
            label: Some(1),
            label_text: "malignant".into(),
            probabilities: vec![0.1, 0.9],
            patches: vec![PatchPrediction {
                x: 32,
                y: 0,
                probabilities: vec![0.0, 1.0],
            }],
            background_patches: 1,
        };
        let map = heatmap(&img, &prediction, 1, 32, "malignant");
        assert_eq!(map.width(), LEGEND_WIDTH);
        assert_eq!(map.height(), 32 + LEGEND_HEIGHT);
        let red = map.get_pixel(40, 10);
        let pale = map.get_pixel(10, 10);
        assert!(red[0] > red[2] + 50, "{red:?}");
        assert!(pale[0] > 200 && pale[1] > 190, "{pale:?}");
        // The legend's three lines of text (ticks, title, note) fit under the
        // colour bar, and each has ink.
        let line = crate::inspect::text::line_height(crate::inspect::text::SMALL);
        let top = 32 + 8 + 10 + 2;
        assert!(top + 3 * line <= map.height(), "{line}");
        for k in 0..3 {
            let dark = (top + k * line..top + (k + 1) * line)
                .flat_map(|y| (0..map.width()).map(move |x| (x, y)))
                .filter(|&(x, y)| map.get_pixel(x, y).0[0] < 160)
                .count();
            assert!(dark > 5, "legend line {k}: {dark} dark pixels");
        }
    }
}
