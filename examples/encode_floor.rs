//! The floor of `histoshard prepare`: the time to decode every source image
//! once and encode every record's pixels, with the encoder `prepare` uses and
//! nothing else (no tissue detection, augmentation, Example building, hashing
//! or writing).
//!
//! ```sh
//! cargo build --release --example encode_floor
//! $CARGO_TARGET_DIR/release/examples/encode_floor --prepared OUT --input GLAS [--threads 2]
//! ```
//!
//! Untimed: reads every record of the shards in `--prepared` and decodes its
//! `image/encoded` to pixels (so the pixels are exactly the records', augmented
//! copies included). Timed, on a rayon pool of `--threads` threads: decoding
//! every source image of `images.parquet` (joined to `--input`) once, then
//! encoding every record's pixels with `histoshard::prepare::encode::Encoding`
//! (the settings of the run's `prepare.json` unless `--format` /
//! `--png-compression` / `--quality` say otherwise). Prints one JSON line:
//! records, seconds, records_per_s, mean_bytes_per_record, the two parts
//! (decode_seconds, encode_seconds) and cpu_seconds (user + system CPU time of
//! the timed part: below seconds × threads when other load held the cores).
//!
//! `--sweep` instead times PNG encoding alone of a subset of the records with
//! libdeflate at every level (adaptive filters, optionally every fixed filter),
//! fdeflate, and the `png` crate's zlib-rs level 6: the speed/size trade-offs
//! open to `Encoding`.

use std::{
    path::{Path, PathBuf},
    time::Instant,
};

use anyhow::{Context, Result, bail};
use clap::Parser;
use histoshard::{
    dataset::image_io::{self, DecodeLimits},
    prepare::{
        encode::{EncodeFormat, Encoding, PngCompression, PngEncoder},
        png_fast::{Deflater, Filter, FilterType, ZlibStrategy},
    },
    shard::{
        example::PatchRecord,
        manifest::{ImageRow, read_parquet},
        reader::ShardReader,
    },
};
use image::RgbImage;
use rayon::prelude::*;

#[derive(Parser)]
#[command(about = "Time decode-once + encode-every-record: the floor of `histoshard prepare`")]
struct Args {
    /// A folder written by `histoshard prepare`.
    #[arg(long)]
    prepared: PathBuf,
    /// The input folder `prepare` read (image paths in images.parquet are relative to it).
    #[arg(long)]
    input: PathBuf,
    /// Worker threads of the timed part.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Encoding (default: the one in prepare.json).
    #[arg(long, value_enum)]
    format: Option<EncodeFormat>,
    #[arg(long, value_enum)]
    png_compression: Option<PngCompression>,
    #[arg(long)]
    quality: Option<u8>,
    /// Instead: time PNG encoding alone (no decode) of an evenly spaced subset
    /// of the records with libdeflate at each of --sweep-levels (adaptive
    /// filters, and with --sweep-fixed each fixed filter too), plus the `png`
    /// crate's fdeflate (`fast`) and zlib-rs level 6 (the `balanced` of before
    /// libdeflate); one JSON line per setting. Level 0 stores: it times the
    /// filtering and framing alone.
    #[arg(long)]
    sweep: bool,
    /// Records in the --sweep subset.
    #[arg(long, default_value_t = 600)]
    sweep_records: usize,
    /// libdeflate levels of the --sweep.
    #[arg(long, value_delimiter = ',', default_values_t = 0..=12)]
    sweep_levels: Vec<i32>,
    /// Also sweep PIL's adaptive choice (no Average) and every fixed filter
    /// (None, Sub, Up, Average, Paeth) with each deflater.
    #[arg(long)]
    sweep_fixed: bool,
    /// Block sizes (bytes of filtered data) of the own RLE deflater to sweep.
    #[arg(long, value_delimiter = ',', default_values_t = [16_384usize, 32_768, 65_536, 1 << 20])]
    sweep_rle_blocks: Vec<usize>,
    /// Also sweep zlib-rs strategies (default, filtered, huffman-only, rle) and
    /// memory levels.
    #[arg(long)]
    sweep_zlib: bool,
}

/// The encoding `prepare` used, from prepare.json's `config`, overridden by flags.
fn encoding(args: &Args) -> Result<Encoding> {
    let path = args.prepared.join("prepare.json");
    let report: serde_json::Value = serde_json::from_slice(
        &std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?,
    )
    .with_context(|| format!("parsing {}", path.display()))?;
    let config = &report["config"];
    let from_config = |key: &str| config.get(key).filter(|v| !v.is_null()).cloned();
    let format = match (args.format, from_config("format")) {
        (Some(f), _) => f,
        (None, Some(v)) => serde_json::from_value(v).context("prepare.json config.format")?,
        (None, None) => EncodeFormat::Png,
    };
    let png_compression = match (args.png_compression, from_config("png_compression")) {
        (Some(c), _) => c,
        (None, Some(v)) => {
            serde_json::from_value(v).context("prepare.json config.png_compression")?
        }
        (None, None) => PngCompression::Balanced,
    };
    let jpeg_quality = match (args.quality, from_config("quality")) {
        (Some(q), _) => q,
        (None, Some(v)) => serde_json::from_value(v).context("prepare.json config.quality")?,
        (None, None) => 90,
    };
    Ok(Encoding {
        format,
        jpeg_quality,
        png_compression,
    })
}

/// Every record's pixels, in shard order (untimed).
fn load_records(dir: &Path) -> Result<Vec<RgbImage>> {
    let mut shards: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p.file_name().map(|n| n.to_string_lossy().into_owned());
            name.is_some_and(|n| {
                !n.starts_with('.') && (n.ends_with(".tfrecord") || n.ends_with(".tfrecord.gz"))
            })
        })
        .collect();
    shards.sort();
    if shards.is_empty() {
        bail!("{}: no shards", dir.display());
    }
    let mut raw = Vec::new();
    for shard in &shards {
        for r in ShardReader::open(shard)? {
            raw.push(r?.data);
        }
    }
    raw.par_iter()
        .map(|data| {
            let rec = PatchRecord::decode(data).map_err(anyhow::Error::msg)?;
            Ok(image::load_from_memory(&rec.encoded)
                .context("decoding image/encoded")?
                .into_rgb8())
        })
        .collect()
}

fn main() -> Result<()> {
    let args = Args::parse();
    let encoding = encoding(&args)?;
    let images = ImageRow::from_dataframe(&read_parquet(&args.prepared.join("images.parquet"))?)
        .context("reading images.parquet")?;
    let sources: Vec<PathBuf> = images
        .iter()
        .map(|r| args.input.join(&r.filename))
        .collect();
    for s in &sources {
        if !s.is_file() {
            bail!(
                "{}: not found (is --input the folder prepare read?)",
                s.display()
            );
        }
    }
    let records = load_records(&args.prepared)?;

    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(args.threads)
        .build()?;
    if args.sweep {
        return sweep(&pool, &records, &args);
    }
    let limits = DecodeLimits::default();
    let cpu_before = cpu_seconds();
    let (decode_s, encode_s, encoded_bytes) = pool.install(|| -> Result<(f64, f64, u64)> {
        let t = Instant::now();
        let pixels: u64 = sources
            .par_iter()
            .map(|p| {
                let img = image_io::decode_rgb(p, limits)?;
                Ok(u64::from(img.width()) * u64::from(img.height()))
            })
            .collect::<Result<Vec<u64>>>()?
            .iter()
            .sum();
        std::hint::black_box(pixels);
        let decode_s = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let bytes: u64 = records
            .par_iter()
            .map(|img| {
                encoding
                    .encode(img)
                    .map(|b| b.len() as u64)
                    .map_err(anyhow::Error::msg)
            })
            .collect::<Result<Vec<u64>>>()?
            .iter()
            .sum();
        Ok((decode_s, t.elapsed().as_secs_f64(), bytes))
    })?;
    let cpu = cpu_seconds().zip(cpu_before).map(|(a, b)| round(a - b, 2));
    let seconds = decode_s + encode_s;
    let n = records.len();
    let out = serde_json::json!({
        "mode": "rust-floor",
        "format": encoding.format.as_str(),
        "png_compression": encoding.png_compression,
        "threads": args.threads,
        "images": sources.len(),
        "records": n,
        "seconds": round(seconds, 4),
        "records_per_s": round(n as f64 / seconds.max(1e-9), 2),
        "mean_bytes_per_record": round(encoded_bytes as f64 / n.max(1) as f64, 1),
        "decode_seconds": round(decode_s, 4),
        "encode_seconds": round(encode_s, 4),
        "cpu_seconds": cpu,
    });
    println!("{out}");
    Ok(())
}

/// A PNG through the `png` crate at an explicit zlib-rs level and filter (the
/// encoder `balanced` used before libdeflate), for comparison.
fn png_crate(img: &RgbImage, level: u8, filter: png::Filter) -> Result<usize> {
    let mut out = Vec::with_capacity(img.as_raw().len() * 3 / 4);
    let mut enc = png::Encoder::new(&mut out, img.width(), img.height());
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    enc.set_deflate_compression(png::DeflateCompression::Level(level));
    enc.set_filter(filter);
    let mut w = enc.write_header()?;
    w.write_image_data(img.as_raw())?;
    w.finish()?;
    Ok(out.len())
}

/// One setting of the sweep.
#[derive(Clone, Copy)]
enum Setting {
    Encoder(PngEncoder),
    PngCrate(u8, png::Filter),
}

impl Setting {
    fn name(self) -> String {
        match self {
            Setting::Encoder(PngEncoder::Fdeflate(filter)) => {
                format!("png crate, fdeflate, {filter:?}").to_lowercase()
            }
            Setting::Encoder(PngEncoder::Own { deflater, filter }) => {
                let f = match filter {
                    Filter::Adaptive => "adaptive".to_string(),
                    Filter::AdaptiveNoAverage => "adaptive without average".to_string(),
                    Filter::Fixed(t) => format!("{t:?}").to_lowercase(),
                };
                let d = match deflater {
                    Deflater::Rle { block_bytes } => format!("rle, {block_bytes}-byte blocks"),
                    Deflater::Libdeflate { level } => format!("libdeflate level {level}"),
                    Deflater::Zlib {
                        level,
                        strategy,
                        mem_level,
                    } => format!(
                        "zlib-rs level {level} {} memlevel {mem_level}",
                        format!("{strategy:?}").to_lowercase()
                    ),
                };
                format!("{d}, {f}")
            }
            Setting::PngCrate(level, filter) => {
                format!("png crate, zlib-rs level {level}, {filter:?}").to_lowercase()
            }
        }
    }

    fn encode(self, img: &RgbImage) -> Result<usize> {
        match self {
            Setting::Encoder(e) => e.encode(img).map(|b| b.len()).map_err(anyhow::Error::msg),
            Setting::PngCrate(level, filter) => png_crate(img, level, filter),
        }
    }
}

fn sweep(pool: &rayon::ThreadPool, records: &[RgbImage], args: &Args) -> Result<()> {
    let want = args.sweep_records;
    let step = (records.len() / want.max(1)).max(1);
    let subset: Vec<&RgbImage> = records.iter().step_by(step).take(want).collect();
    let mut settings = vec![
        Setting::Encoder(PngEncoder::Fdeflate(png::Filter::Adaptive)),
        Setting::Encoder(PngEncoder::Fdeflate(png::Filter::Paeth)),
        Setting::PngCrate(6, png::Filter::Adaptive),
    ];
    let own = |deflater, filter| Setting::Encoder(PngEncoder::Own { deflater, filter });
    let mut deflaters: Vec<Deflater> = args
        .sweep_levels
        .iter()
        .map(|&level| Deflater::Libdeflate { level })
        .collect();
    for &block_bytes in &args.sweep_rle_blocks {
        deflaters.push(Deflater::Rle { block_bytes });
    }
    if args.sweep_zlib {
        for (level, strategy, mem_level) in [
            (6, ZlibStrategy::Default, 8),
            (6, ZlibStrategy::Default, 9),
            (1, ZlibStrategy::Filtered, 9),
            (4, ZlibStrategy::Filtered, 9),
            (6, ZlibStrategy::Filtered, 8),
            (6, ZlibStrategy::Filtered, 9),
            (6, ZlibStrategy::HuffmanOnly, 8),
            (6, ZlibStrategy::HuffmanOnly, 9),
            (6, ZlibStrategy::Rle, 6),
            (6, ZlibStrategy::Rle, 7),
            (6, ZlibStrategy::Rle, 8),
            (6, ZlibStrategy::Rle, 9),
        ] {
            deflaters.push(Deflater::Zlib {
                level,
                strategy,
                mem_level,
            });
        }
    }
    if args.sweep_fixed {
        for f in [
            png::Filter::NoFilter,
            png::Filter::Sub,
            png::Filter::Up,
            png::Filter::Avg,
        ] {
            settings.push(Setting::Encoder(PngEncoder::Fdeflate(f)));
        }
    }
    for deflater in deflaters {
        settings.push(own(deflater, Filter::Adaptive));
        if args.sweep_fixed {
            settings.push(own(deflater, Filter::AdaptiveNoAverage));
            for t in [
                FilterType::None,
                FilterType::Sub,
                FilterType::Up,
                FilterType::Average,
                FilterType::Paeth,
            ] {
                settings.push(own(deflater, Filter::Fixed(t)));
            }
        }
    }
    for setting in settings {
        let cpu_before = cpu_seconds();
        let t = Instant::now();
        let bytes: usize = pool
            .install(|| {
                subset
                    .par_iter()
                    .map(|img| setting.encode(img))
                    .collect::<Result<Vec<usize>>>()
            })?
            .iter()
            .sum();
        let s = t.elapsed().as_secs_f64();
        let cpu = cpu_seconds().zip(cpu_before).map(|(a, b)| a - b);
        println!(
            "{}",
            serde_json::json!({
                "mode": "sweep",
                "cpu_seconds": cpu.map(|c| round(c, 2)),
                "records_per_cpu_s": cpu.map(|c| round(subset.len() as f64 / c.max(0.01), 1)),
                "setting": setting.name(),
                "threads": args.threads,
                "records": subset.len(),
                "seconds": round(s, 4),
                "records_per_s": round(subset.len() as f64 / s, 1),
                "records_per_s_per_thread": round(subset.len() as f64 / s / args.threads as f64, 1),
                "mean_bytes_per_record": round(bytes as f64 / subset.len() as f64, 1),
            })
        );
    }
    Ok(())
}

/// User + system CPU time of this process so far (Linux `/proc/self/stat`,
/// in clock ticks of 1/100 s), to tell CPU work from waiting on a loaded machine.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

fn round(v: f64, digits: i32) -> f64 {
    let k = 10f64.powi(digits);
    (v * k).round() / k
}
