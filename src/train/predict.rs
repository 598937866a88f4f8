//! `histoshard predict`: a trained run on new whole images. Each image is
//! tiled exactly as `prepare` tiled the training data (scale, patch size,
//! stride, edge policy, tissue threshold, stain normalisation — through
//! [`crate::preprocess`], the code `prepare` and the shard loader run), every
//! tissue patch is classified, and the patch probabilities are averaged into
//! the image's label — the same aggregation `evaluate` reports as "mean".
//! One difference: where `prepare` dropped the strip at the right and bottom
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
    error::TrainResult,
    infer::{Inference, to_vec},
    run::{self, PREPROCESSING_JSON, RunInfo, load_run_model},
};
use crate::{
    dataset::image_io::{DEFAULT_MAX_PIXELS, DecodeLimits},
    error::Error,
    patch::{
        stain::{StainMethod, StainNormalizer},
        tiling::{self, EdgePolicy},
    },
    prepare::PrepareReport,
    preprocess::{self, Normalization, TissueFilter},
};

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
    /// `prepare`'s `--max-pixels`: the largest image (at the working scale)
    /// or stain reference decoded.
    #[serde(default = "default_max_pixels")]
    pub max_pixels: u64,
    /// Side patches are resized to before the model, if not `patch_size`.
    pub input_size: Option<u32>,
    /// `(pixel / 255 − mean) / std`, per RGB channel, NCHW.
    pub normalization: Normalization,
    /// Output index → class name.
    pub classes: Vec<String>,
    /// How patch probabilities become an image's: their mean.
    pub aggregation: String,
}

fn default_max_pixels() -> u64 {
    DEFAULT_MAX_PIXELS
}

/// One image at the working scale, ready to cut model inputs from.
pub struct Tiles {
    /// Scaled and stain-normalised: what patches are cut from.
    pub image: RgbImage,
    /// Top-left corners of the patches with enough tissue, row by row.
    pub kept: Vec<(u32, u32)>,
    /// Every patch position considered.
    pub candidates: usize,
}

impl Preprocessing {
    /// The data's tiling (from its `prepare.json`) and a model's input.
    pub fn from_report(
        report: &PrepareReport,
        input_size: Option<u32>,
        normalization: Normalization,
    ) -> Self {
        let c = &report.config;
        Self {
            patch_size: c.patch_size,
            stride: c.stride,
            scale: c.scale,
            edge: c.edge,
            min_tissue: c.min_tissue,
            stain_normalize: c.stain_normalize,
            stain_reference: c.stain_reference.clone(),
            max_pixels: c.max_pixels,
            input_size,
            normalization,
            classes: report.classes.clone(),
            aggregation: "mean".into(),
        }
    }

    /// Built from the data folder's `prepare.json` and the run's model.
    pub fn from_run(info: &RunInfo) -> Result<Self, Error> {
        let report = crate::prepare::read_report(&info.data)?;
        let model = &info.config.model;
        Ok(Self::from_report(
            &report,
            model.input_size(),
            model.normalization(),
        ))
    }

    /// The run's `preprocessing.json`, or for a run without one, what
    /// [`Self::from_run`] builds.
    pub fn of_run(run: &Path, info: &RunInfo) -> Result<Self, Error> {
        match Self::load(run) {
            Ok(p) => Ok(p),
            Err(_) => Self::from_run(info),
        }
    }

    pub fn load(run: &Path) -> Result<Self, Error> {
        run::read_json(&run.join(PREPROCESSING_JSON), "a preprocessing.json")
    }

    pub fn save(&self, run: &Path) -> Result<(), Error> {
        let path = run.join(PREPROCESSING_JSON);
        let text =
            serde_json::to_string_pretty(self).map_err(|e| Error::output(&path, e.to_string()))?;
        crate::atomic::write(&path, text.as_bytes())
    }

    pub fn limits(&self) -> DecodeLimits {
        DecodeLimits {
            max_pixels: self.max_pixels,
        }
    }

    /// The stain normaliser `prepare` used, set up as `prepare` set it up.
    pub fn stain(&self) -> Result<Option<StainNormalizer>, Error> {
        preprocess::stain_normalizer(
            self.stain_normalize,
            self.stain_reference.as_deref(),
            self.limits(),
        )
    }

    /// The image at `path` tiled as `prepare` tiled the training images:
    /// working scale, tissue judged before stain normalisation, then `stain`
    /// applied. Where `prepare` dropped the strip at the right and bottom
    /// edges, a last patch is shifted flush with the edge instead, so every
    /// pixel is classified; an image smaller than a patch gets one
    /// reflect-padded patch.
    pub fn tiles(&self, path: &Path, stain: Option<&StainNormalizer>) -> Result<Tiles, Error> {
        let mut image = preprocess::working_image(path, self.scale, self.limits())?;
        let (w, h) = image.dimensions();
        let edge = match self.edge {
            EdgePolicy::Drop => EdgePolicy::Shift,
            other => other,
        };
        let mut grid = tiling::grid(w, h, self.patch_size, self.stride, edge);
        if grid.is_empty() {
            grid.push((0, 0));
        }
        let tissue = TissueFilter::new(&image, self.patch_size, self.min_tissue);
        let candidates = grid.len();
        let kept = grid.into_iter().filter(|&p| tissue.keeps(p)).collect();
        if let Some(n) = stain {
            image = n.apply(&image);
        }
        Ok(Tiles {
            image,
            kept,
            candidates,
        })
    }

    /// The model input of the patch at `(x, y)` of a working image.
    pub fn input(&self, image: &RgbImage, (x, y): (u32, u32)) -> Vec<f32> {
        let patch = tiling::crop_reflect(image, x, y, self.patch_size);
        preprocess::model_input(&patch, self.input_size, &self.normalization)
    }

    /// The model's input side.
    pub fn side(&self) -> u32 {
        self.input_size.unwrap_or(self.patch_size)
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
    /// Batch norm folded, on the inner backend of `device`.
    model: Inference,
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
        let pre = Preprocessing::of_run(run, &info)?;
        let (model, _) = load_run_model(run, &info, checkpoint, device)?;
        let stain = pre.stain()?;
        Ok(Self {
            model: Inference::new(&model),
            pre,
            stain,
            device: device.clone().without_autodiff(),
            batch_size: batch_size.max(1),
        })
    }

    pub fn preprocessing(&self) -> &Preprocessing {
        &self.pre
    }

    /// Tiles, classifies and aggregates one image; also returns the working
    /// image (scaled, stain-normalised) the patches were cut from.
    pub fn predict(&self, path: &Path) -> TrainResult<(ImagePrediction, RgbImage)> {
        let p = &self.pre;
        let Tiles {
            image: img,
            kept,
            candidates,
        } = p.tiles(path, self.stain.as_ref())?;
        let k = p.classes.len().max(2);
        let side = p.side() as usize;
        let mut patches = Vec::with_capacity(kept.len());
        for chunk in kept.chunks(self.batch_size) {
            let mut x = Vec::with_capacity(chunk.len() * 3 * side * side);
            for &at in chunk {
                x.extend(p.input(&img, at));
            }
            let t = Tensor::<4>::from_data(
                TensorData::new(x, [chunk.len(), 3, side, side]),
                &self.device,
            );
            let probs = to_vec(softmax(self.model.forward(t), 1))?;
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
    use std::collections::BTreeMap;

    use super::*;
    use crate::train::data::{Dataset, LoaderConfig, Selection};

    /// A patch `prepare` stored, as the shard loader hands it to the model,
    /// and the same patch as `predict` cuts it from the source image: the
    /// same floats (lossless PNG; scale, tissue filter and stain
    /// normalisation, and a resize to the model's side, all on the way).
    #[test]
    fn a_prepared_patch_and_a_predicted_patch_are_the_same_tensor() {
        let t = tempfile::tempdir().unwrap();
        let input = t.path().join("glas");
        let synth = crate::synth::SynthOptions { images: 6, seed: 3 };
        crate::synth::generate(&input, &synth).unwrap();
        let out = t.path().join("data");
        let mut opts = crate::prepare::PrepareOptions::new(&input, &out);
        opts.patch_size = 32;
        opts.stride = 32;
        opts.scale = 0.25;
        opts.min_tissue = 0.3;
        opts.stain_normalize = Some(StainMethod::Macenko);
        let report = crate::prepare::run(&opts, &crate::progress::Progress::hidden()).unwrap();
        let pre = Preprocessing::from_report(&report, Some(24), Normalization::IMAGENET);
        let stain = pre.stain().unwrap();
        assert!(stain.is_some());

        let data = Dataset::open(&out, &Selection::split("train")).unwrap();
        let loader = LoaderConfig::eval(8, pre.input_size, pre.normalization);
        let mut tiles: BTreeMap<String, Tiles> = BTreeMap::new();
        let mut compared = 0;
        for batch in data.stream(&loader, 0).unwrap() {
            let batch = batch.unwrap();
            assert_eq!((batch.height, batch.width), (24, 24));
            let n = 3 * 24 * 24;
            for (i, &r) in batch.rows.iter().enumerate() {
                let row = &data.rows()[r];
                let t = tiles.entry(row.filename.clone()).or_insert_with(|| {
                    pre.tiles(&input.join(&row.filename), stain.as_ref())
                        .unwrap()
                });
                let at = (row.x as u32, row.y as u32);
                assert!(
                    t.kept.contains(&at),
                    "{} {at:?} not predicted",
                    row.filename
                );
                assert!(
                    batch.images[i * n..(i + 1) * n] == pre.input(&t.image, at)[..],
                    "{} {at:?}: the loader's tensor differs from predict's",
                    row.filename
                );
                compared += 1;
            }
        }
        assert!(compared >= 10, "only {compared} patches compared");
    }

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
