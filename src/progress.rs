//! Progress bars that vanish under `--quiet` and when stderr is not a terminal.

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Hands out progress bars; a hidden one draws nothing.
#[derive(Clone)]
pub struct Progress {
    multi: MultiProgress,
}

impl Progress {
    pub fn new(visible: bool) -> Self {
        let target = if visible {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        Self {
            multi: MultiProgress::with_draw_target(target),
        }
    }

    pub fn hidden() -> Self {
        Self::new(false)
    }

    /// A bar counting `len` items of `unit`, labelled `stage`.
    pub fn bar(&self, stage: &str, len: u64, unit: &str) -> ProgressBar {
        let style = ProgressStyle::with_template(&format!(
            "{{prefix:>9}} [{{bar:30}}] {{pos}}/{{len}} {unit} {{per_sec}} eta {{eta}}"
        ))
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        let bar = self.multi.add(ProgressBar::new(len).with_style(style));
        bar.set_prefix(stage.to_string());
        bar
    }
}
