//! Progress bars (indicatif), one per training run.

use anyhow::Result;
use indicatif::{ProgressBar, ProgressStyle};

/// A bar of `len` steps labelled `name`, with room for a message (the loss).
pub fn bar(name: &str, len: usize) -> Result<ProgressBar> {
    let style =
        ProgressStyle::with_template("{prefix:>34} [{bar:30}] {pos:>4}/{len} {elapsed:>4} {msg}")?
            .progress_chars("=> ");
    Ok(ProgressBar::new(len as u64)
        .with_style(style)
        .with_prefix(name.to_string()))
}
