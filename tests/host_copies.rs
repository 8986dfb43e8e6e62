//! Every copy of values between a tensor's device and the host goes through
//! `src/linalg/host.rs`, where it is counted (`Timings::transfers`): on a GPU
//! each is a synchronization and a transfer over the bus, so one made
//! elsewhere would be a cost nobody sees. This test reads the crate's source
//! and names any call that copies outside it.

use std::fs;
use std::path::{Path, PathBuf};

/// The calls that copy between the host and a device (or read a tensor's
/// values to the host).
const COPIES: [&str; 8] = [
    ".to_vec1",
    ".to_vec2",
    ".to_vec3",
    ".to_scalar",
    ".to_device(",
    "Tensor::new(",
    "Tensor::from_vec(",
    "Tensor::from_slice(",
];

/// Where copies may stand: the counted boundary itself, and the CPU kernels,
/// which only ever run on `Device::Cpu` (their "copies" are the results of
/// host code, on the host). `kernels/stacked.rs` builds its tensor from host
/// values only where those kernels take the dtype and device.
const ALLOWED: [&str; 3] = ["linalg/host.rs", "kernels/cpu/", "kernels/stacked.rs"];

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).expect("src is readable") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The lines of `text` that are code outside tests: up to a file's first
/// `#[cfg(test)]`, without comments (doc examples may copy freely).
fn code_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .enumerate()
        .take_while(|(_, l)| l.trim() != "#[cfg(test)]")
        .filter(|(_, l)| !l.trim_start().starts_with("//"))
}

#[test]
fn copies_between_device_and_host_go_through_linalg_host() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    assert!(files.len() > 40, "found only {} source files", files.len());
    let mut found = Vec::new();
    for file in &files {
        let name = file
            .strip_prefix(&src)
            .expect("under src")
            .to_string_lossy()
            .replace('\\', "/");
        if ALLOWED.iter().any(|a| name.starts_with(a)) || name.ends_with("_tests.rs") {
            continue;
        }
        let text = fs::read_to_string(file).expect("a source file");
        for (i, line) in code_lines(&text) {
            if let Some(call) = COPIES.iter().find(|c| line.contains(*c)) {
                found.push(format!("src/{name}:{}: {call}: {}", i + 1, line.trim()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "copies outside src/linalg/host.rs (uncounted):\n{}",
        found.join("\n")
    );
}

/// The scan sees a copy where there is one (it cannot pass by reading
/// nothing): `host.rs` itself has them.
#[test]
fn the_scan_finds_the_copies_of_host_rs() {
    let host = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/linalg/host.rs");
    let text = fs::read_to_string(host).expect("host.rs");
    let copies = code_lines(&text)
        .filter(|(_, l)| COPIES.iter().any(|c| l.contains(c)))
        .count();
    assert!(copies >= 3, "host.rs shows {copies} copies");
}
