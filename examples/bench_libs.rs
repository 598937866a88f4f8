//! Our own image code against the library that could replace it (docs/BENCHMARKS.md,
//! "Own code against libraries"): the Gaussian blur of the augmentations against
//! imageproc's, the Otsu threshold of the tissue filter against imageproc's, and the
//! zlib stream of `--png-compression balanced` (src/prepare/rle_deflate.rs) against
//! zlib-rs and libdeflate, all behind the same PNG writer (src/prepare/png_fast.rs).
//!
//! ```sh
//! cargo build --release --features tch --example bench_libs
//! $CARGO_TARGET_DIR/release/examples/bench_libs ~/glas-train [--repeats 3]
//! ```
//!
//! Reads every `*.bmp` / `*.png` of the folder that is not a mask (`_anno`), cuts
//! each into 224² tiles on a 224 grid, and adds one augmented copy of every tile
//! (default `AugmentConfig`, seed 1): the kind of records `prepare --augment 1`
//! writes. One thread; times are CPU time of the thread (`CLOCK_THREAD_CPUTIME_ID`),
//! the best of `--repeats`. Prints a markdown table per part.

use std::{path::PathBuf, time::Duration};

use histoshard::{
    patch::{
        augment::{AugmentConfig, augment, gaussian_blur},
        tissue::{MAX_OD_THRESHOLD, MIN_OD_THRESHOLD, optical_density, otsu_bin, tissue_threshold},
    },
    prepare::png_fast::{Deflater, Filter, ZlibStrategy, encode_rgb8},
};
use image::{GrayImage, RgbImage};
use rand::SeedableRng;

const TILE: u32 = 224;

fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// The least CPU time of `repeats` runs of `f`, and its last result.
fn best<T>(repeats: usize, mut f: impl FnMut() -> T) -> (f64, T) {
    let mut best = f64::MAX;
    let mut out = None;
    for _ in 0..repeats.max(1) {
        let t = thread_cpu();
        let r = f();
        best = best.min((thread_cpu() - t).as_secs_f64());
        out = Some(r);
    }
    (best, out.expect("at least one run"))
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(
        args.next()
            .ok_or_else(|| anyhow::anyhow!("usage: bench_libs DIR [--repeats N]"))?,
    );
    let repeats = match (args.next().as_deref(), args.next()) {
        (Some("--repeats"), Some(n)) => n.parse()?,
        _ => 3,
    };
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            (name.ends_with(".bmp") || name.ends_with(".png")) && !name.contains("_anno")
        })
        .collect();
    paths.sort();
    let images: Vec<RgbImage> = paths
        .iter()
        .map(|p| Ok(image::open(p)?.into_rgb8()))
        .collect::<anyhow::Result<_>>()?;
    let mut tiles = Vec::new();
    for img in &images {
        for y in (0..=img.height().saturating_sub(TILE)).step_by(TILE as usize) {
            for x in (0..=img.width().saturating_sub(TILE)).step_by(TILE as usize) {
                tiles.push(image::imageops::crop_imm(img, x, y, TILE, TILE).to_image());
            }
        }
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    let cfg = AugmentConfig::default();
    let augmented: Vec<RgbImage> = tiles.iter().map(|t| augment(t, &cfg, &mut rng).0).collect();
    let records: Vec<&RgbImage> = tiles.iter().chain(&augmented).collect();
    println!(
        "{} images from {}, {} tiles of {TILE}², {} records with one augmented copy each; \
         one thread, best of {repeats}\n",
        images.len(),
        dir.display(),
        tiles.len(),
        records.len()
    );

    blur(&tiles, repeats);
    otsu(&images, repeats);
    deflate(&records, repeats);
    Ok(())
}

fn blur(tiles: &[RgbImage], repeats: usize) {
    println!(
        "| blur σ | own ms/tile | imageproc ms/tile | bytes that differ | largest difference |"
    );
    println!("|---|---:|---:|---:|---:|");
    for sigma in [0.3f32, 0.6, 1.0] {
        let (own_s, own) = best(repeats, || {
            tiles
                .iter()
                .map(|t| {
                    let mut t = t.clone();
                    gaussian_blur(&mut t, sigma);
                    t
                })
                .collect::<Vec<_>>()
        });
        let (lib_s, lib) = best(repeats, || {
            tiles
                .iter()
                .map(|t| imageproc::filter::gaussian_blur_f32(t, sigma))
                .collect::<Vec<_>>()
        });
        let (mut differ, mut total, mut largest) = (0u64, 0u64, 0u8);
        for (a, b) in own.iter().zip(&lib) {
            for (&x, &y) in a.as_raw().iter().zip(b.as_raw()) {
                total += 1;
                if x != y {
                    differ += 1;
                    largest = largest.max(x.abs_diff(y));
                }
            }
        }
        let n = tiles.len() as f64;
        println!(
            "| {sigma} | {:.3} | {:.3} | {:.1}% | {largest} |",
            own_s * 1e3 / n,
            lib_s * 1e3 / n,
            100.0 * differ as f64 / total as f64
        );
    }
    println!();
}

/// The OD-norm bins `tissue_threshold` builds its histogram from, as an image.
fn od_bins(img: &RgbImage) -> GrayImage {
    let scale = 256.0f32 / 3.0;
    let sq: [f32; 256] = std::array::from_fn(|i| {
        let v = optical_density(i as u8);
        v * v
    });
    GrayImage::from_fn(img.width(), img.height(), |x, y| {
        let p = img.get_pixel(x, y).0;
        let n = (sq[p[0] as usize] + sq[p[1] as usize] + sq[p[2] as usize]).sqrt();
        image::Luma([(n * scale).min(255.0) as u8])
    })
}

fn otsu(images: &[RgbImage], repeats: usize) {
    let scale = 256.0f32 / 3.0;
    let (own_s, own) = best(repeats, || {
        images.iter().map(tissue_threshold).collect::<Vec<_>>()
    });
    let (lib_s, lib) = best(repeats, || {
        images
            .iter()
            .map(|img| {
                let t = imageproc::contrast::otsu_level(&od_bins(img));
                ((f32::from(t) + 1.0) / scale).clamp(MIN_OD_THRESHOLD, MAX_OD_THRESHOLD)
            })
            .collect::<Vec<_>>()
    });
    let same = own.iter().zip(&lib).filter(|(a, b)| a == b).count();
    let n = images.len() as f64;
    println!("| Otsu on the OD norm | ms/image | thresholds equal to ours |");
    println!("|---|---:|---:|");
    println!("| own (`tissue_threshold`) | {:.2} | — |", own_s * 1e3 / n);
    println!(
        "| imageproc `otsu_level` on the same 256 bins (bins image + its histogram) | {:.2} | {same}/{} |",
        lib_s * 1e3 / n,
        images.len()
    );
    // At the pixel limit `prepare` accepts (100 Mpx): a fifth glass (OD-norm bin 2),
    // a tenth pale tissue (bin 20, OD norm 0.23), the rest darker tissue (bin 70).
    // imageproc sums `bin × count` in u32, which wraps past 4.29e9 (70 × 70e6).
    let (w, h) = (10_000u32, 10_000u32);
    let bin = |y: u32| match y {
        0..2_000 => 2u8,
        2_000..3_000 => 20,
        _ => 70,
    };
    let big = GrayImage::from_fn(w, h, |_, y| image::Luma([bin(y)]));
    let mut hist = [0u64; 256];
    for p in big.as_raw() {
        hist[*p as usize] += 1;
    }
    let own = otsu_bin(&hist).map_or(0, |t| t as u8);
    let lib = imageproc::contrast::otsu_level(&big);
    let od = |t: u8| ((f32::from(t) + 1.0) / scale).clamp(MIN_OD_THRESHOLD, MAX_OD_THRESHOLD);
    println!(
        "| 100 Mpx: ⅕ bin 2, ⅒ bin 20, the rest bin 70 | own bin {own} (OD norm > {:.3}) | imageproc bin {lib} (OD norm > {:.3}) |\n",
        od(own),
        od(lib)
    );
}

fn deflate(records: &[&RgbImage], repeats: usize) {
    let rows: [(&str, Deflater); 8] = [
        (
            "own RLE deflater, 64 KiB blocks (`balanced`)",
            Deflater::Rle {
                block_bytes: 65_536,
            },
        ),
        (
            "zlib-rs `Z_RLE`, level 6, memLevel 9",
            zlib(ZlibStrategy::Rle, 9),
        ),
        (
            "zlib-rs `Z_RLE`, level 6, memLevel 8",
            zlib(ZlibStrategy::Rle, 8),
        ),
        (
            "zlib-rs `Z_HUFFMAN_ONLY`, memLevel 9",
            zlib(ZlibStrategy::HuffmanOnly, 9),
        ),
        (
            "zlib-rs level 6, default strategy",
            zlib(ZlibStrategy::Default, 8),
        ),
        ("libdeflate level 1", Deflater::Libdeflate { level: 1 }),
        ("libdeflate level 6", Deflater::Libdeflate { level: 6 }),
        (
            "libdeflate level 12 (`high`)",
            Deflater::Libdeflate { level: 12 },
        ),
    ];
    println!(
        "| PNG writer's zlib stream (adaptive filters) | records per CPU s | mean bytes | vs own |"
    );
    println!("|---|---:|---:|---:|");
    let mut own_bytes = 0.0;
    for (name, d) in rows {
        let (s, bytes) = best(repeats, || {
            records
                .iter()
                .map(|r| {
                    encode_rgb8(r.width(), r.height(), r.as_raw(), d, Filter::Adaptive)
                        .expect("encodes")
                        .len()
                })
                .sum::<usize>()
        });
        let mean = bytes as f64 / records.len() as f64;
        if own_bytes == 0.0 {
            own_bytes = mean;
        }
        println!(
            "| {name} | {:.0} | {mean:.0} | {:+.2}% |",
            records.len() as f64 / s,
            100.0 * (mean / own_bytes - 1.0)
        );
    }
}

fn zlib(strategy: ZlibStrategy, mem_level: i32) -> Deflater {
    Deflater::Zlib {
        level: 6,
        strategy,
        mem_level,
    }
}
