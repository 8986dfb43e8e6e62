//! The Markdown report: per task the learning-rate grid and the comparison
//! table, then the goals of the default DampedNewton.

use std::fmt::Write;

use crate::summary::Summary;

/// Per-step times are compared only where a forward and backward pass takes this long.
const MIN_PASS_MS: f64 = 1.0;

/// How the numbers are made, for the head of the report.
pub const METHOD: &str = "\
Training loss: the loss on the whole training set, before training and after every step \
(not timed). Time: the cumulative seconds of the steps only, each the recorded forward pass \
of the mini-batch (`vivit::record`) plus the optimizer step (L-BFGS: with its line search's \
evaluations). Learning rates: the grid value with the lowest mean final training loss over \
the seeds. Target: the tuned AdamW's mean final training loss. Steps and seconds to the \
target: median over seeds of the first step at or below it (— where the median run never \
gets there). Loss at AdamW's time: each run's loss after its last step within the tuned \
AdamW's mean total step time, averaged over seeds. Seeds fix the initialization and the \
mini-batch order. Cached runs (the baselines, see `README.md`) keep the times measured \
when they ran: compare times of one machine under the same load.";

/// The section of one task: its settings, the grid and the table.
pub fn task_section(s: &Summary) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "## {}\n\n{}.\n", s.name, s.description);
    let _ = writeln!(
        out,
        "Forward + backward of one batch: {:.2} ms (median of 20). Target: {}. \
         AdamW's time: {:.2} s. Seeds: {}.\n",
        s.forward_backward_ms,
        loss(s.target),
        s.budget,
        s.seeds
    );
    out.push_str(&grid_table(s));
    out.push('\n');
    out.push_str(&results_table(s));
    for row in &s.rows {
        for (seed, stop) in &row.stops {
            let _ = writeln!(
                out,
                "\n{} seed {seed} stopped after {} step{}: {}",
                row.method.label(),
                stop.step,
                if stop.step == 1 { "" } else { "s" },
                stop.reason
            );
        }
    }
    out
}

/// Mean final training loss of every grid point, the tuned one in bold.
fn grid_table(s: &Summary) -> String {
    let mut lrs: Vec<f64> = s.grid.iter().map(|p| p.lr).collect();
    lrs.sort_by(f64::total_cmp);
    lrs.dedup();
    let mut out = String::from("Mean final training loss on the learning-rate grid:\n\n| lr |");
    for lr in &lrs {
        let _ = write!(out, " {lr} |");
    }
    out.push_str("\n|---|");
    out.push_str(&"---:|".repeat(lrs.len()));
    out.push('\n');
    let mut families: Vec<&str> = s.grid.iter().map(|p| p.family.as_str()).collect();
    families.dedup();
    let mut on_edge = false;
    for family in families {
        let tuned = s.row(family).and_then(|r| r.method.lr());
        let own: Vec<f64> = s
            .grid
            .iter()
            .filter(|p| p.family == family)
            .map(|p| p.lr)
            .collect();
        let edge = |lr: f64| own.len() > 1 && (own.first() == Some(&lr) || own.last() == Some(&lr));
        let _ = write!(out, "| {family} |");
        for lr in &lrs {
            match s.grid.iter().find(|p| p.family == family && p.lr == *lr) {
                Some(p) if Some(p.lr) == tuned => {
                    let mark = if edge(p.lr) { " †" } else { "" };
                    on_edge |= edge(p.lr);
                    let _ = write!(out, " **{}**{mark} |", loss(p.mean_final));
                }
                Some(p) => {
                    let _ = write!(out, " {} |", loss(p.mean_final));
                }
                None => out.push_str(" |"),
            }
        }
        out.push('\n');
    }
    if on_edge {
        out.push_str("\n† the tuned learning rate is at the edge of its grid.\n");
    }
    out
}

/// One row per optimizer at its tuned learning rate.
fn results_table(s: &Summary) -> String {
    let mut out = String::from(
        "| optimizer | lr | steps to target | seconds to target | final loss | \
         loss at AdamW's time | ms per step |\n|---|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in &s.rows {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {:.2} |",
            r.method.family(),
            r.method.lr().map_or("—".to_string(), |lr| lr.to_string()),
            r.steps_to_target
                .map_or("—".to_string(), |v| format!("{v:.0}")),
            r.seconds_to_target
                .map_or("—".to_string(), |v| format!("{v:.3}")),
            loss(r.final_loss),
            loss(r.loss_at_budget),
            r.ms_per_step
        );
    }
    out
}

/// Whether the default DampedNewton (the first variant) beats the tuned
/// AdamW per task: fewer steps and less time to the target, and its time per
/// step relative to AdamW's.
pub fn goals(summaries: &[Summary], default_name: &str) -> String {
    let mut out = format!(
        "## Goals\n\n{default_name} against the tuned AdamW (per-step times are compared \
         where a forward and backward pass takes ≥ {MIN_PASS_MS} ms):\n\n\
         | task | fewer steps to target | less time to target | time per step vs AdamW | \
         forward+backward ≥ {MIN_PASS_MS} ms |\n|---|---|---|---:|---|\n"
    );
    for s in summaries {
        let (Some(dn), Some(adamw)) = (s.row(default_name), s.row("AdamW")) else {
            continue;
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {:.2}× | {} ({:.2} ms) |",
            s.name,
            verdict(dn.steps_to_target, adamw.steps_to_target, |v| format!(
                "{v:.0}"
            )),
            verdict(dn.seconds_to_target, adamw.seconds_to_target, |v| format!(
                "{v:.3} s"
            )),
            dn.ms_per_step / adamw.ms_per_step,
            yes_no(s.forward_backward_ms >= MIN_PASS_MS),
            s.forward_backward_ms
        );
    }
    out
}

/// Whether DampedNewton's cost `dn` is below AdamW's `adamw` (`None`: never
/// reached, `+∞`), with both values.
fn verdict(dn: Option<f64>, adamw: Option<f64>, show: impl Fn(f64) -> String) -> String {
    let better = dn.unwrap_or(f64::INFINITY) < adamw.unwrap_or(f64::INFINITY);
    let show = |v: Option<f64>| v.map_or("—".to_string(), &show);
    format!("{} ({} vs {})", yes_no(better), show(dn), show(adamw))
}

fn yes_no(yes: bool) -> &'static str {
    if yes {
        "yes"
    } else {
        "no"
    }
}

/// A loss to four significant digits; `∞` for a diverged one.
fn loss(value: f64) -> String {
    if value.is_infinite() {
        "∞".to_string()
    } else if value.is_nan() {
        "—".to_string()
    } else if value != 0.0 && (value.abs() < 1e-3 || value.abs() >= 1e5) {
        format!("{value:.3e}")
    } else {
        let digits = (3 - value.abs().log10().floor() as i32).clamp(0, 6) as usize;
        format!("{value:.digits$}")
    }
}
