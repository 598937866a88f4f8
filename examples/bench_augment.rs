//! Time of `augment` per patch, whole and one operation at a time, on
//! 224² crops of a real or generated image (single thread). Reports this
//! thread's CPU time per patch, which other load on the machine disturbs far
//! less than wall time.
//!
//! ```sh
//! cargo build --release --no-default-features --example bench_augment
//! $CARGO_TARGET_DIR/release/examples/bench_augment IMAGE.bmp [PATCHES]
//! ```

use std::time::Instant;

use histoshard::patch::augment::{AugmentConfig, augment};
use rand::SeedableRng;

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(path) = args.next() else {
        eprintln!("usage: bench_augment IMAGE [PATCHES]");
        std::process::exit(2);
    };
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(400);
    let img = match image::open(&path) {
        Ok(i) => i.to_rgb8(),
        Err(e) => {
            eprintln!("{path}: {e}");
            std::process::exit(1);
        }
    };
    let side = 224u32;
    let (cols, rows) = (img.width() / side, img.height() / side);
    let patches: Vec<_> = (0..cols * rows)
        .map(|i| {
            image::imageops::crop_imm(&img, (i % cols) * side, (i / cols) * side, side, side)
                .to_image()
        })
        .collect();
    let all = AugmentConfig::default();
    let none = AugmentConfig::none();
    let only = |f: &dyn Fn(&mut AugmentConfig)| {
        let mut c = none.clone();
        f(&mut c);
        c
    };
    let cases: Vec<(&str, AugmentConfig)> = vec![
        ("all (default)", all.clone()),
        (
            "flips + rot90",
            only(&|c| {
                c.flips = true;
                c.rot90 = true;
            }),
        ),
        (
            "rotate (p 0.5)",
            only(&|c| c.max_rotate_degrees = all.max_rotate_degrees),
        ),
        (
            "scale (p 0.5)",
            only(&|c| c.scale_jitter = all.scale_jitter),
        ),
        ("hed", only(&|c| c.hed_sigma = all.hed_sigma)),
        (
            "brightness+contrast (p 0.5 each)",
            only(&|c| {
                c.brightness = all.brightness;
                c.contrast = all.contrast;
            }),
        ),
        (
            "blur (p 1)",
            only(&|c| {
                c.blur_probability = 1.0;
                c.blur_max_sigma = all.blur_max_sigma;
            }),
        ),
        (
            "jpeg (p 1)",
            only(&|c| {
                c.jpeg_probability = 1.0;
                c.jpeg_min_quality = all.jpeg_min_quality;
            }),
        ),
    ];
    println!(
        "{n} augmentations of {} patches of {side}² from {path}",
        patches.len()
    );
    for (name, cfg) in cases {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let (t, c) = (Instant::now(), thread_cpu_seconds());
        let mut sink = 0u64;
        for i in 0..n {
            let (out, _) = augment(&patches[i % patches.len()], &cfg, &mut rng);
            sink += u64::from(out.as_raw()[i % 100]);
        }
        let cpu_ms = (thread_cpu_seconds() - c) * 1e3 / n as f64;
        let wall_ms = t.elapsed().as_secs_f64() * 1e3 / n as f64;
        println!("{name:>34}: {cpu_ms:.3} ms CPU per patch (wall {wall_ms:.3}; checksum {sink})");
    }
}

fn thread_cpu_seconds() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}
