//! Procedural H&E-like colon mucosa: one image and its gland instance mask.
//!
//! The picture is built in stain space — a haematoxylin and an eosin concentration
//! per pixel — and turned into RGB with Beer–Lambert (`255·exp(-OD)`) at the end, so
//! colours, stain variation and stain deconvolution behave like real H&E.
//!
//! Steps: place glands (analytic outlines with radial noise) → rasterise the instance
//! mask → distance to the gland border (epithelium depth) → paint stroma, epithelium
//! and lumens → stamp nuclei → blur → compose with a per-image stain → pixel noise.
//! Benign crypts are round, even, hollow and have one neat basal row of small
//! nuclei; malignant glands are distorted, fused, cribriform and full of large,
//! dark, disorderly nuclei.

use std::f32::consts::{PI, TAU};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::field::{
    Noise, blur121, coarse, distance_transform, fast_atan2, floor_i32, hash2, lerp, smoothstep,
    unit,
};

/// Most gland instances one image gets (labels stay in 1..=MAX_GROUPS).
const MAX_GROUPS: usize = 30;
#[cfg(test)]
pub(super) const MAX_GROUPS_FOR_TESTS: usize = MAX_GROUPS;
/// Angular resolution of a gland outline.
const TABLE: usize = 256;
/// Visible gland fragments smaller than this (px) are left out of mask and picture.
const MIN_GLAND_PX: usize = 40;

/// What one image should show.
#[derive(Clone, Debug)]
pub(super) struct Look {
    pub width: u32,
    pub height: u32,
    pub malignant: bool,
    /// 0 = healthy mucosa … 1 = poorly differentiated carcinoma.
    pub atypia: f32,
    /// Benign and healthy (not adenomatous): rounder crypts, more goblet cells.
    pub healthy: bool,
    /// Everything random about the image comes from this.
    pub seed: u64,
    /// The patient's staining batch (shared by the patient's images).
    pub stain_seed: u64,
}

/// A rendered image: interleaved RGB bytes and the instance mask, row-major.
pub(super) struct Rendered {
    pub rgb: Vec<u8>,
    pub mask: Vec<u8>,
    pub glands: usize,
}

fn uni(rng: &mut ChaCha8Rng, lo: f32, hi: f32) -> f32 {
    lo + (hi - lo) * rng.random::<f32>()
}

fn chance(rng: &mut ChaCha8Rng, p: f32) -> bool {
    rng.random::<f32>() < p
}

/// Renders `look` deterministically.
pub(super) fn render(look: &Look) -> Rendered {
    let mut rng = ChaCha8Rng::seed_from_u64(look.seed);
    let stain = Stain::new(look.stain_seed, &mut rng);
    let (w, h) = (look.width as usize, look.height as usize);
    let glands = place_glands(&mut rng, look);
    let mut label = rasterise(&glands, w, h);
    let (count, group_label) = relabel(&mut label);
    let depth = gland_depth(&label, w, h);
    let mut props = gland_props(&mut rng, look, &label, &depth, w, count);
    let mut canvas = Canvas {
        w,
        h,
        hf: vec![0.0; w * h],
        ef: vec![0.0; w * h],
    };
    let gap = paint_tissue(&mut canvas, &mut rng, look, &label, &depth, &mut props);
    stromal_nuclei(&mut canvas, &mut rng, look, &label, &gap);
    if look.malignant {
        malignant_nuclei(&mut canvas, &mut rng, look, &label, &depth, &props);
    } else {
        for g in &glands {
            let l = group_label[g.group as usize];
            if l != 0 {
                basal_row(
                    &mut canvas,
                    &mut rng,
                    look,
                    g,
                    l,
                    &label,
                    &depth,
                    &props[l as usize],
                );
            }
        }
    }
    let mut tmp = vec![0.0; w * h];
    blur121(&mut canvas.hf, &mut tmp, w, h);
    blur121(&mut canvas.ef, &mut tmp, w, h);
    let rgb = canvas.compose(&stain, rng.random());
    Rendered {
        rgb,
        mask: label,
        glands: count,
    }
}

// ---------------------------------------------------------------------------
// Glands as shapes

/// One gland outline: a star-shaped polar curve, stretched by `aspect` and rotated.
struct Gland {
    cx: f32,
    cy: f32,
    cos: f32,
    sin: f32,
    /// Stretch along the local x / y axes (`ax·ay = 1`).
    ax: f32,
    ay: f32,
    r0: f32,
    /// Outline radius (in the unstretched frame) at angle `i·τ/TABLE - π`.
    radius: Vec<f32>,
    rmax: f32,
    /// Shortest distance from the centre to the outline is at least this.
    inner: f32,
    /// Instance id before relabelling; fused glands share one.
    group: u8,
}

impl Gland {
    fn new(
        rng: &mut ChaCha8Rng,
        centre: (f32, f32),
        r0: f32,
        aspect: f32,
        wobble: f32,
        bumps: usize,
    ) -> Gland {
        let rot = uni(rng, 0.0, PI);
        let ax = aspect.sqrt();
        let kmax = if wobble > 0.1 { 8 } else { 4 };
        let harmonics: Vec<(f32, f32, f32)> = (2..=kmax)
            .map(|k| {
                let k = k as f32;
                (
                    k,
                    wobble * uni(rng, 0.3, 1.0) / k.powf(0.9),
                    uni(rng, 0.0, TAU),
                )
            })
            .collect();
        let lumps: Vec<(f32, f32, f32)> = (0..bumps)
            .map(|_| {
                (
                    uni(rng, -PI, PI),
                    uni(rng, -0.3, 0.45),
                    uni(rng, 0.15, 0.45),
                )
            })
            .collect();
        // Harmonics by rotation recurrence (no trig per entry), bumps near their centre.
        let mut f = vec![1.0f32; TABLE];
        let step = TAU / TABLE as f32;
        for &(k, a, ph) in &harmonics {
            let (c0, s0) = ((ph - k * PI).cos(), (ph - k * PI).sin());
            let (dc, ds) = ((k * step).cos(), (k * step).sin());
            let (mut c, mut s) = (c0, s0);
            for v in f.iter_mut() {
                *v += a * c;
                (c, s) = (c * dc - s * ds, s * dc + c * ds);
            }
        }
        for &(centre, a, wd) in &lumps {
            let half = ((3.0 * wd / step) as isize).min(TABLE as isize / 2);
            let mid = ((centre + PI) / step).round() as isize;
            for j in mid - half..=mid + half {
                let d = (j as f32 * step - PI - centre).abs();
                let d = if d > PI { TAU - d } else { d };
                f[j.rem_euclid(TABLE as isize) as usize] += a * (-(d / wd) * (d / wd)).exp();
            }
        }
        let radius: Vec<f32> = f.into_iter().map(|v| r0 * v.max(0.4)).collect();
        let rmax = radius.iter().fold(0.0f32, |m, &r| m.max(r));
        let inner = radius.iter().fold(f32::INFINITY, |m, &r| m.min(r)) / ax;
        Gland {
            cx: centre.0,
            cy: centre.1,
            cos: rot.cos(),
            sin: rot.sin(),
            ax,
            ay: 1.0 / ax,
            r0,
            radius,
            rmax,
            inner,
            group: 0,
        }
    }

    /// A point in the gland's unstretched polar frame.
    #[inline]
    fn local(&self, x: f32, y: f32) -> (f32, f32) {
        let (dx, dy) = (x - self.cx, y - self.cy);
        (
            (dx * self.cos + dy * self.sin) / self.ax,
            (-dx * self.sin + dy * self.cos) / self.ay,
        )
    }

    #[inline]
    fn radius_at(&self, theta: f32) -> f32 {
        let t = (theta + PI) * (TABLE as f32 / TAU);
        let i = floor_i32(t);
        let f = t - i as f32;
        let i0 = (i.max(0) as usize) % TABLE;
        let i1 = (i0 + 1) % TABLE;
        lerp(self.radius[i0], self.radius[i1], f)
    }

    /// The outline point at polar angle `theta`, in image coordinates.
    fn outline(&self, theta: f32) -> (f32, f32) {
        let r = self.radius_at(theta);
        let (lx, ly) = (r * theta.cos() * self.ax, r * theta.sin() * self.ay);
        (
            self.cx + lx * self.cos - ly * self.sin,
            self.cy + lx * self.sin + ly * self.cos,
        )
    }

    /// Distance from the centre to the outline in the direction of (x, y).
    fn extent_towards(&self, x: f32, y: f32) -> f32 {
        let (u, v) = self.local(x, y);
        let th = fast_atan2(v, u);
        let (c, s) = (th.cos() * self.ax, th.sin() * self.ay);
        self.radius_at(th) * (c * c + s * s).sqrt()
    }
}

/// Whether a centre lies closer to one of `glands` than `limit(gland)`: a cheap
/// test that rejects candidates before their outline is built.
fn too_close(glands: &[Gland], centre: (f32, f32), limit: impl Fn(&Gland) -> f32) -> bool {
    glands.iter().any(|o| {
        let d = ((centre.0 - o.cx).powi(2) + (centre.1 - o.cy).powi(2)).sqrt();
        d < limit(o)
    })
}

/// Stroma left between two glands along the line joining their centres (negative: overlap).
fn separation(a: &Gland, b: &Gland) -> f32 {
    let d = ((a.cx - b.cx).powi(2) + (a.cy - b.cy).powi(2)).sqrt();
    d - a.extent_towards(b.cx, b.cy) - b.extent_towards(a.cx, a.cy)
}

fn place_glands(rng: &mut ChaCha8Rng, look: &Look) -> Vec<Gland> {
    let (w, h) = (look.width as f32, look.height as f32);
    let mut glands: Vec<Gland> = Vec::new();
    let mut groups = 0usize;
    // Stop once the glands' nominal area covers this much of the image.
    let mut room = w * h;
    if !look.malignant {
        // Evenly sized, evenly spaced crypts that never touch.
        room *= uni(rng, 0.3, 0.5);
        let mean_r = uni(rng, 34.0, 52.0);
        let gap = uni(rng, 5.0, 12.0);
        let (wobble, long) = if look.healthy {
            (0.03, 0.15)
        } else {
            (0.06, 0.35)
        };
        let mut misses = 0;
        while room > 0.0 && groups < MAX_GROUPS && misses < 250 {
            misses += 1;
            let r = mean_r * uni(rng, 0.82, 1.18);
            let aspect = if chance(rng, long) {
                uni(rng, 1.4, 2.1)
            } else {
                uni(rng, 1.0, 1.3)
            };
            let centre = (
                uni(rng, -0.1 * r, w + 0.1 * r),
                uni(rng, -0.1 * r, h + 0.1 * r),
            );
            let wob = wobble * uni(rng, 0.5, 1.5);
            // Cheap rejection before building the outline: the centres are too close.
            // (outlines never come closer to the centre than 0.4·r·ay, see `Gland::new`)
            let inner = 0.4 * r / aspect.sqrt();
            if too_close(&glands, centre, |o| inner + o.inner + gap) {
                continue;
            }
            let mut g = Gland::new(rng, centre, r, aspect, wob, 0);
            if glands.iter().all(|o| separation(&g, o) >= gap) {
                groups += 1;
                g.group = groups as u8;
                room -= PI * r * r;
                glands.push(g);
                misses = 0;
            }
        }
    } else {
        // Distorted glands of every size, packed tight, some fused into one instance.
        let a = look.atypia;
        room *= uni(rng, 0.42, 0.62);
        let wobble = 0.16 + 0.24 * a;
        let (r_lo, r_hi) = if a > 0.82 {
            (16.0f32, 60.0f32)
        } else {
            (18.0, 80.0)
        };
        let fuse = 0.35 + 0.4 * a;
        let mut misses = 0;
        while room > 0.0 && glands.len() < 90 && misses < 250 {
            misses += 1;
            // Once the instance budget is spent, glands only grow fused complexes:
            // new ones start on the outline of an existing one.
            let full = groups >= MAX_GROUPS;
            let r = uni(rng, r_lo.ln(), r_hi.ln()).exp();
            let aspect = uni(rng, 1.0, 2.0);
            let centre = match glands.len() {
                n if full && n > 0 => {
                    let o = &glands[rng.random_range(0..n)];
                    let (x, y) = o.outline(uni(rng, -PI, PI));
                    (x + uni(rng, -0.3, 0.3) * r, y + uni(rng, -0.3, 0.3) * r)
                }
                _ => (uni(rng, 0.0, w), uni(rng, 0.0, h)),
            };
            let bumps = rng.random_range(0..4usize);
            let wob = wobble * uni(rng, 0.6, 1.4);
            let inner = 0.4 * r / aspect.sqrt();
            if too_close(&glands, centre, |o| inner + o.inner - 0.45 * r.min(o.r0)) {
                continue;
            }
            let mut g = Gland::new(rng, centre, r, aspect, wob, bumps);
            let mut join: Option<u8> = None;
            let mut ok = true;
            for o in &glands {
                let sep = separation(&g, o);
                if sep < -0.45 * g.r0.min(o.r0) {
                    ok = false;
                } else if sep < -3.0 {
                    match join {
                        None => join = Some(o.group),
                        Some(j) if j == o.group => {}
                        Some(_) => ok = false,
                    }
                }
                if !ok {
                    break;
                }
            }
            if !ok {
                continue;
            }
            match join {
                None if full => {}
                Some(j) => {
                    if full || chance(rng, fuse) {
                        g.group = j;
                        room -= 0.7 * PI * r * r;
                        glands.push(g);
                        misses = 0;
                    }
                }
                None => {
                    groups += 1;
                    g.group = groups as u8;
                    room -= PI * r * r;
                    glands.push(g);
                    misses = 0;
                }
            }
        }
    }
    glands
}

/// The instance mask by outline: each pixel goes to the gland it is deepest inside.
fn rasterise(glands: &[Gland], w: usize, h: usize) -> Vec<u8> {
    let mut label = vec![0u8; w * h];
    let mut best = vec![1.0f32; w * h];
    for g in glands {
        let reach = g.rmax * g.ax.max(g.ay) + 1.0;
        let x0 = (g.cx - reach).floor().max(0.0) as usize;
        let y0 = (g.cy - reach).floor().max(0.0) as usize;
        let x1 = ((g.cx + reach).ceil().max(0.0) as usize).min(w);
        let y1 = ((g.cy + reach).ceil().max(0.0) as usize).min(h);
        let rmax2 = g.rmax * g.rmax;
        for y in y0..y1 {
            for x in x0..x1 {
                let (u, v) = g.local(x as f32, y as f32);
                let rho2 = u * u + v * v;
                if rho2 >= rmax2 {
                    continue;
                }
                let s = rho2.sqrt() / g.radius_at(fast_atan2(v, u));
                let i = y * w + x;
                if s < best[i] {
                    best[i] = s;
                    label[i] = g.group;
                }
            }
        }
    }
    label
}

/// Renumbers the visible instances 1..=N (dropping slivers); returns N and the map
/// from placement group to final label.
fn relabel(label: &mut [u8]) -> (usize, [u8; 256]) {
    let mut counts = [0usize; 256];
    for &l in label.iter() {
        counts[l as usize] += 1;
    }
    let mut map = [0u8; 256];
    let mut next = 0u8;
    for g in 1..256 {
        if counts[g] >= MIN_GLAND_PX {
            next += 1;
            map[g] = next;
        }
    }
    for l in label.iter_mut() {
        *l = map[*l as usize];
    }
    (next as usize, map)
}

/// Distance of each gland pixel to its gland's border (0 on the border; stroma 0).
/// The image edge is not a border: glands continue beyond the field of view.
fn gland_depth(label: &[u8], w: usize, h: usize) -> Vec<f32> {
    let feature: Vec<bool> = (0..w * h)
        .map(|i| {
            let l = label[i];
            if l == 0 {
                return true;
            }
            let (x, y) = (i % w, i / w);
            (x > 0 && label[i - 1] != l)
                || (x + 1 < w && label[i + 1] != l)
                || (y > 0 && label[i - w] != l)
                || (y + 1 < h && label[i + w] != l)
        })
        .collect();
    distance_transform(&feature, w, h)
}

/// Per-instance drawing parameters.
#[derive(Clone, Debug, Default)]
struct Props {
    /// Epithelium thickness: deeper than this is lumen.
    lumen: f32,
    /// Lumen filled with pink debris and nuclear dust ("dirty necrosis").
    necrosis: bool,
    /// Extra small round lumens (cribriform pattern): x, y, radius.
    holes: Vec<[f32; 3]>,
    bbox: [usize; 4],
    max_depth: f32,
    /// Pixels painted as epithelium / lumen (filled in by `paint_tissue`).
    epithelium_px: usize,
    lumen_px: usize,
}

fn gland_props(
    rng: &mut ChaCha8Rng,
    look: &Look,
    label: &[u8],
    depth: &[f32],
    w: usize,
    count: usize,
) -> Vec<Props> {
    let mut props = vec![
        Props {
            bbox: [usize::MAX, usize::MAX, 0, 0],
            ..Props::default()
        };
        count + 1
    ];
    for (i, &l) in label.iter().enumerate() {
        if l == 0 {
            continue;
        }
        let p = &mut props[l as usize];
        let (x, y) = (i % w, i / w);
        p.bbox = [
            p.bbox[0].min(x),
            p.bbox[1].min(y),
            p.bbox[2].max(x),
            p.bbox[3].max(y),
        ];
        p.max_depth = p.max_depth.max(depth[i]);
    }
    let a = look.atypia;
    for (l, p) in props.iter_mut().enumerate().skip(1) {
        let md = p.max_depth;
        if !look.malignant {
            let frac = if look.healthy {
                uni(rng, 0.62, 0.8)
            } else {
                uni(rng, 0.7, 0.88)
            };
            p.lumen = (frac * md).clamp(9.0, 30.0);
            continue;
        }
        if chance(rng, 0.45 * (1.0 - a) + 0.1) {
            p.lumen = (uni(rng, 0.45, 0.7) * md).max(9.0);
            p.necrosis = chance(rng, 0.55);
        } else {
            p.lumen = (uni(rng, 0.8, 1.05) * md).max(9.0);
        }
        let cribriform = if a > 0.82 { 0.3 } else { 0.65 };
        if md > 14.0 && chance(rng, cribriform) {
            let want = ((md / 9.0) * uni(rng, 0.5, 1.5)).round().clamp(1.0, 9.0) as usize;
            let [x0, y0, x1, y1] = p.bbox;
            for _ in 0..want * 25 {
                if p.holes.len() >= want {
                    break;
                }
                let x = rng.random_range(x0..=x1);
                let y = rng.random_range(y0..=y1);
                let r = uni(rng, 2.5, 6.5);
                let i = y * w + x;
                let d = depth[i];
                if label[i] as usize != l || d < r + 4.0 || d > p.lumen - 1.0 {
                    continue;
                }
                let (xf, yf) = (x as f32, y as f32);
                if p.holes
                    .iter()
                    .all(|o| ((o[0] - xf).powi(2) + (o[1] - yf).powi(2)).sqrt() > o[2] + r + 3.0)
                {
                    p.holes.push([xf, yf, r]);
                }
            }
        }
    }
    props
}

// ---------------------------------------------------------------------------
// Painting in stain space

/// Haematoxylin (`hf`) and eosin (`ef`) concentration per pixel.
struct Canvas {
    w: usize,
    h: usize,
    hf: Vec<f32>,
    ef: Vec<f32>,
}

/// An ellipse: centre, semi-axes (`a` along `angle`), orientation.
#[derive(Clone, Copy, Debug)]
struct Blob {
    x: f32,
    y: f32,
    a: f32,
    b: f32,
    angle: f32,
}

impl Canvas {
    /// Calls `f(alpha, q, x, y, h, e)` for each pixel the blob covers, with an
    /// anti-aliased coverage `alpha` and the normalised radius `q`.
    fn stamp(&mut self, b: Blob, mut f: impl FnMut(f32, f32, usize, usize, &mut f32, &mut f32)) {
        let r = b.a.max(b.b) + 1.5;
        let x0 = (b.x - r).floor().max(0.0) as usize;
        let y0 = (b.y - r).floor().max(0.0) as usize;
        let x1 = ((b.x + r).ceil().max(-1.0) + 1.0) as usize;
        let y1 = ((b.y + r).ceil().max(-1.0) + 1.0) as usize;
        let (x1, y1) = (x1.min(self.w), y1.min(self.h));
        let (c, s) = (b.angle.cos(), b.angle.sin());
        let edge = b.a.min(b.b);
        for y in y0..y1 {
            for x in x0..x1 {
                let (dx, dy) = (x as f32 - b.x, y as f32 - b.y);
                let u = (dx * c + dy * s) / b.a;
                let v = (-dx * s + dy * c) / b.b;
                let q = (u * u + v * v).sqrt();
                let alpha = ((1.0 - q) * edge + 0.5).clamp(0.0, 1.0);
                if alpha > 0.0 {
                    let i = y * self.w + x;
                    f(alpha, q, x, y, &mut self.hf[i], &mut self.ef[i]);
                }
            }
        }
    }

    /// A nucleus: haematoxylin up to `conc` with chromatin grain; `vesicular` ones
    /// have a darker rim (and get a nucleolus from the caller).
    fn nucleus(&mut self, b: Blob, conc: f32, vesicular: bool, seed: u32) {
        self.stamp(b, |alpha, q, x, y, h, e| {
            let grain = 0.78 + 0.44 * unit(hash2(x as i32, y as i32, seed));
            let profile = if vesicular {
                0.55 + 0.55 * q.min(1.0)
            } else {
                1.0
            };
            let target = conc * grain * profile;
            *h = h.max(lerp(*h, target, alpha));
            *e *= 1.0 - 0.3 * alpha;
        });
    }

    /// Paints the blob towards the given concentrations (goblet cells, vacuoles).
    fn fill(&mut self, b: Blob, th: f32, te: f32) {
        self.stamp(b, |alpha, _, _, _, h, e| {
            *h = lerp(*h, th, alpha);
            *e = lerp(*e, te, alpha);
        });
    }

    /// Beer–Lambert with the image's stain, plus sensor noise: interleaved RGB.
    fn compose(&self, stain: &Stain, seed: u32) -> Vec<u8> {
        const LUT: usize = 4096;
        const OD_MAX: f32 = 6.0;
        let scale = LUT as f32 / OD_MAX;
        let lut: Vec<f32> = (0..LUT)
            .map(|i| 255.0 * (-(i as f32) / scale).exp())
            .collect();
        let mut out = vec![0u8; self.w * self.h * 3];
        for y in 0..self.h {
            for x in 0..self.w {
                let i = y * self.w + x;
                let hv = self.hf[i] * stain.hs;
                let ev = self.ef[i] * stain.es;
                let noise = hash2(x as i32, y as i32, seed);
                let shared = (noise >> 24) as f32 / 255.0 - 0.5;
                for c in 0..3 {
                    let od = stain.base[c] + hv * stain.h[c] + ev * stain.e[c];
                    let idx = ((od * scale) as usize).min(LUT - 1);
                    let own = ((noise >> (8 * c)) & 0xff) as f32 / 255.0 - 0.5;
                    let v = lut[idx] + own * 4.0 + shared * 5.0;
                    out[i * 3 + c] = (v + 0.5) as u8; // saturating
                }
            }
        }
        out
    }
}

/// Optical-density vectors of the two stains and their strengths for one image.
struct Stain {
    h: [f32; 3],
    e: [f32; 3],
    base: [f32; 3],
    hs: f32,
    es: f32,
}

impl Stain {
    /// The patient's batch (from `batch_seed`) varied a little per image (`rng`).
    fn new(batch_seed: u64, rng: &mut ChaCha8Rng) -> Stain {
        let mut batch = ChaCha8Rng::seed_from_u64(batch_seed);
        let mut vector = |v: [f32; 3], rng: &mut ChaCha8Rng| {
            let mut out = [0.0f32; 3];
            for (o, &c) in out.iter_mut().zip(&v) {
                *o = (c + uni(&mut batch, -0.07, 0.07) + uni(rng, -0.035, 0.035)).max(0.02);
            }
            let n = (out[0] * out[0] + out[1] * out[1] + out[2] * out[2]).sqrt();
            out.map(|c| c / n)
        };
        let h = vector([0.612, 0.753, 0.234], rng);
        let e = vector([0.146, 0.877, 0.459], rng);
        let hs = uni(&mut batch, 0.85, 1.15) * uni(rng, 0.94, 1.06);
        let es = uni(&mut batch, 0.82, 1.18) * uni(rng, 0.93, 1.07);
        let base = [0; 3].map(|_| 0.03 + uni(&mut batch, -0.012, 0.02));
        Stain { h, e, base, hs, es }
    }
}

/// Stroma (wavy fibres, slow thickness variation, white gaps) and glands
/// (epithelium, lumens, basement membrane). Returns the white-gap weight per pixel.
fn paint_tissue(
    canvas: &mut Canvas,
    rng: &mut ChaCha8Rng,
    look: &Look,
    label: &[u8],
    depth: &[f32],
    props: &mut [Props],
) -> Vec<f32> {
    let (w, h) = (canvas.w, canvas.h);
    let mut noise = || Noise::new(rng.random());
    let (n_lf, n_lf2, n_warp, n_warp2) = (noise(), noise(), noise(), noise());
    let (n_gap, n_gap2, n_gap3) = (noise(), noise(), noise());
    let (n_fib, n_fib2, n_lum, n_epi) = (noise(), noise(), noise(), noise());
    let grain_seed: u32 = rng.random();
    let fa = uni(rng, 0.0, PI);
    let (fc, fs) = (fa.cos(), fa.sin());
    let a = look.atypia;
    let e_str = uni(rng, 0.3, 0.4) * if look.malignant { 1.1 } else { 1.0 };
    let h_str = uni(rng, 0.035, 0.055) * if look.malignant { 1.0 } else { 1.3 };
    let gap_thr = uni(rng, 0.66, 0.8);
    let (epi_h, epi_e) = if look.malignant {
        (0.34 + 0.08 * a, 0.46)
    } else if look.healthy {
        (0.15, 0.28)
    } else {
        (0.19, 0.3)
    };
    let wobble = if look.malignant { 7.0 } else { 2.0 };

    // Slowly varying quantities, every 4 px: section thickness, white gaps, and
    // fibre coordinates (along u, across v) that bend and wave across the image.
    let slow = coarse(w, h, 4, |x, y| {
        let lf = n_lf.at(x / 140.0, y / 140.0) * 0.65 + n_lf2.at(x / 45.0, y / 45.0) * 0.35;
        let wx = n_warp.at(x / 90.0, y / 90.0) - 0.5;
        let wy = n_warp2.at(x / 90.0 + 7.3, y / 90.0 + 1.9) - 0.5;
        let (gx, gy) = (x + 60.0 * wx, y + 60.0 * wy);
        let gn = n_gap.at(gx / 120.0, gy / 120.0) * 0.6
            + n_gap2.at((gx * 0.8 + gy * 0.6) / 45.0, (gy * 0.8 - gx * 0.6) / 45.0) * 0.28
            + n_gap3.at((gx * 0.6 - gy * 0.8) / 18.0, (gy * 0.6 + gx * 0.8) / 18.0) * 0.12;
        let gap = smoothstep(gap_thr, gap_thr + 0.07, gn);
        let u = x * fc + y * fs + 40.0 * wy;
        let v = -x * fs + y * fc + 45.0 * wx;
        [lf, gap, u, v]
    });

    let mut gap = vec![0.0f32; w * h];
    for y in 0..h {
        let yf = y as f32;
        for x in 0..w {
            let xf = x as f32;
            let i = y * w + x;
            let [lf, gw, u, v] = slow[i];
            let thick = 0.85 + 0.3 * lf;
            let g = unit(hash2(x as i32, y as i32, grain_seed)) - 0.5;
            let l = label[i] as usize;
            if l == 0 {
                let fib = n_fib.at(u / 34.0, v / 3.0) * 0.6 + n_fib2.at(u / 13.0, v / 1.6) * 0.4;
                let fib = smoothstep(0.2, 0.85, fib);
                let keep = 1.0 - 0.95 * gw;
                canvas.hf[i] = h_str * thick * (1.0 + 0.5 * g) * keep;
                canvas.ef[i] = e_str * thick * (0.76 + 0.38 * fib) * (1.0 + 0.18 * g) * keep;
                gap[i] = gw;
                continue;
            }
            let p = &mut props[l];
            let d = depth[i];
            let tex = 1.0 + 0.25 * g + 0.3 * (n_epi.at(xf / 3.0, yf / 3.0) - 0.5);
            let (mut hv, mut ev) = (epi_h * thick * tex, epi_e * thick * tex);
            if d < 1.0 {
                ev += 0.12; // basement membrane
            } else if !look.malignant && d > 0.6 * p.lumen {
                hv *= 0.85; // paler apical cytoplasm
                ev *= 0.85;
            }
            let thr = p.lumen + (n_lum.at(xf / 8.0, yf / 8.0) - 0.5) * wobble;
            let mut lumen = smoothstep(thr, thr + 1.5, d);
            for o in &p.holes {
                let r = ((xf - o[0]).powi(2) + (yf - o[1]).powi(2)).sqrt();
                lumen = lumen.max(smoothstep(o[2] + 0.7, o[2] - 0.7, r));
            }
            if lumen > 0.0 {
                let (lh, le) = if p.necrosis {
                    (0.1 + 0.1 * lf + 0.1 * g, 0.3 + 0.1 * g)
                } else {
                    (0.02, 0.03 + 0.03 * lf)
                };
                hv = lerp(hv, lh, lumen);
                ev = lerp(ev, le, lumen);
            }
            if lumen < 0.5 {
                p.epithelium_px += 1;
            } else {
                p.lumen_px += 1;
            }
            canvas.hf[i] = hv;
            canvas.ef[i] = ev;
        }
    }
    gap
}

/// Lymphocytes and spindle fibroblasts scattered in the stroma (more lymphocytes in
/// benign lamina propria, fewer cells in desmoplastic tumour stroma).
fn stromal_nuclei(
    canvas: &mut Canvas,
    rng: &mut ChaCha8Rng,
    look: &Look,
    label: &[u8],
    gap: &[f32],
) {
    let (w, h) = (canvas.w, canvas.h);
    let stroma = label.iter().filter(|&&l| l == 0).count();
    let (per_px, lymph) = if look.malignant {
        (650.0, 0.35)
    } else {
        (380.0, 0.6)
    };
    let n = (stroma as f32 / per_px) as usize;
    let fiber = uni(rng, 0.0, PI);
    let seed: u32 = rng.random();
    for _ in 0..n {
        for _ in 0..4 {
            let x = rng.random_range(0..w);
            let y = rng.random_range(0..h);
            let i = y * w + x;
            if label[i] != 0 || gap[i] > 0.3 {
                continue;
            }
            let (xf, yf) = (x as f32, y as f32);
            if chance(rng, lymph) {
                let r = uni(rng, 2.2, 3.2);
                let blob = Blob {
                    x: xf,
                    y: yf,
                    a: r,
                    b: r * uni(rng, 0.85, 1.0),
                    angle: 0.0,
                };
                canvas.nucleus(blob, uni(rng, 1.7, 2.2), false, seed);
            } else {
                let blob = Blob {
                    x: xf,
                    y: yf,
                    a: uni(rng, 4.5, 8.0),
                    b: uni(rng, 1.2, 1.8),
                    angle: fiber + uni(rng, -0.5, 0.5),
                };
                canvas.nucleus(blob, uni(rng, 1.2, 1.6), false, seed);
            }
            break;
        }
    }
}

/// Benign crypt: one evenly spaced row of basal nuclei, long axis across the
/// epithelium, with goblet cells above them.
#[allow(clippy::too_many_arguments)]
fn basal_row(
    canvas: &mut Canvas,
    rng: &mut ChaCha8Rng,
    look: &Look,
    g: &Gland,
    l: u8,
    label: &[u8],
    depth: &[f32],
    p: &Props,
) {
    let (w, h) = (canvas.w, canvas.h);
    let healthy = look.healthy;
    let spacing = if healthy {
        uni(rng, 7.0, 8.0)
    } else {
        uni(rng, 5.8, 6.8)
    };
    let long = if healthy {
        uni(rng, 4.0, 5.0)
    } else {
        uni(rng, 5.0, 6.2)
    };
    let short = uni(rng, 2.0, 2.5);
    let conc = if healthy {
        uni(rng, 1.35, 1.6)
    } else {
        uni(rng, 1.55, 1.8)
    };
    let goblets = if healthy { 0.6 } else { 0.15 };
    let seed: u32 = rng.random();
    let pts: Vec<(f32, f32)> = (0..=TABLE)
        .map(|i| g.outline(i as f32 * TAU / TABLE as f32 - PI))
        .collect();
    let mut next = uni(rng, 0.0, spacing);
    let mut walked = 0.0f32;
    for seg in pts.windows(2) {
        let ((x0, y0), (x1, y1)) = (seg[0], seg[1]);
        let len = ((x1 - x0).powi(2) + (y1 - y0).powi(2)).sqrt();
        if len <= 0.0 {
            continue;
        }
        let (tx, ty) = ((x1 - x0) / len, (y1 - y0) / len);
        while next < walked + len {
            let t = next - walked;
            let (px, py) = (x0 + tx * t, y0 + ty * t);
            // Inward normal.
            let (mut nx, mut ny) = (-ty, tx);
            if (g.cx - px) * nx + (g.cy - py) * ny < 0.0 {
                nx = -nx;
                ny = -ny;
            }
            let stratify = if healthy {
                uni(rng, -0.4, 0.4)
            } else {
                uni(rng, -1.0, 2.5)
            };
            let a = long * uni(rng, 0.9, 1.1);
            let dn = a + 1.2 + stratify;
            let (x, y) = (px + nx * dn, py + ny * dn);
            let inside = |x: f32, y: f32| {
                let (xi, yi) = (x.round(), y.round());
                if xi < 0.0 || yi < 0.0 || xi >= w as f32 || yi >= h as f32 {
                    return None;
                }
                let i = yi as usize * w + xi as usize;
                (label[i] == l).then_some(depth[i])
            };
            let angle = ny.atan2(nx);
            if chance(rng, goblets) {
                let dg = dn + a + 4.5;
                let (gx, gy) = (
                    px + nx * dg + tx * spacing * 0.5,
                    py + ny * dg + ty * spacing * 0.5,
                );
                if inside(gx, gy).is_some_and(|d| d < p.lumen - 1.0) {
                    let blob = Blob {
                        x: gx,
                        y: gy,
                        a: uni(rng, 3.5, 5.0),
                        b: uni(rng, 3.0, 4.0),
                        angle,
                    };
                    canvas.fill(blob, 0.05, 0.05);
                }
            }
            if inside(x, y).is_some() {
                let blob = Blob {
                    x,
                    y,
                    a,
                    b: short * uni(rng, 0.9, 1.1),
                    angle,
                };
                canvas.nucleus(blob, conc * uni(rng, 0.92, 1.08), false, seed);
            }
            next += spacing * uni(rng, 0.85, 1.15);
        }
        walked += len;
    }
}

/// Malignant glands: crowded, stratified, pleomorphic nuclei through the whole
/// epithelium, and nuclear debris in necrotic lumens.
fn malignant_nuclei(
    canvas: &mut Canvas,
    rng: &mut ChaCha8Rng,
    look: &Look,
    label: &[u8],
    depth: &[f32],
    props: &[Props],
) {
    let w = canvas.w;
    let a = look.atypia;
    let seed: u32 = rng.random();
    for (l, p) in props.iter().enumerate().skip(1) {
        let [x0, y0, x1, y1] = p.bbox;
        let n = (p.epithelium_px as f32 / uni(rng, 115.0, 150.0) * (0.85 + 0.4 * a)) as usize;
        for _ in 0..n {
            for _ in 0..6 {
                let x = rng.random_range(x0..=x1);
                let y = rng.random_range(y0..=y1);
                let i = y * w + x;
                let d = depth[i];
                let big = uni(rng, 3.4, 5.8) * (1.0 + 0.3 * a);
                // Mostly inside the gland: nuclei do not spill into the stroma.
                if label[i] as usize != l || d < 0.6 * big || d > p.lumen + 1.0 {
                    continue;
                }
                let (xf, yf) = (x as f32, y as f32);
                if p.holes
                    .iter()
                    .any(|o| ((xf - o[0]).powi(2) + (yf - o[1]).powi(2)).sqrt() < o[2] + 1.5)
                {
                    continue;
                }
                // Roughly across the epithelium (along the depth gradient), but disorderly.
                let at = |j: usize| depth.get(j).copied().unwrap_or(d);
                let gx = at(i + 1) - at(i.saturating_sub(1));
                let gy = at(i + w) - at(i.saturating_sub(w));
                let blob = Blob {
                    x: xf,
                    y: yf,
                    a: big,
                    b: big * uni(rng, 0.5, 0.9),
                    angle: gy.atan2(gx) + uni(rng, -0.8, 0.8),
                };
                let conc = uni(rng, 1.8, 2.5);
                let vesicular = chance(rng, 0.3 + 0.3 * a);
                canvas.nucleus(blob, conc, vesicular, seed);
                if vesicular {
                    let dot = Blob {
                        x: xf,
                        y: yf,
                        a: 1.1,
                        b: 1.0,
                        angle: 0.0,
                    };
                    canvas.nucleus(dot, conc * 1.15, false, seed);
                }
                break;
            }
        }
        if p.necrosis {
            for _ in 0..p.lumen_px / 60 {
                let x = rng.random_range(x0..=x1);
                let y = rng.random_range(y0..=y1);
                let i = y * w + x;
                if label[i] as usize == l && depth[i] > p.lumen + 2.0 {
                    let r = uni(rng, 0.8, 2.0);
                    let blob = Blob {
                        x: x as f32,
                        y: y as f32,
                        a: r,
                        b: r,
                        angle: 0.0,
                    };
                    canvas.nucleus(blob, uni(rng, 1.5, 2.4), false, seed);
                }
            }
        }
    }
}
