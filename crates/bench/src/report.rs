//! The report: one row per figure (ours, distribution's, and the ratio ours / theirs), and the
//! one-line machine-readable summary.

use std::fmt::Write as _;

/// Which way a figure is better.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Better {
    /// Throughput: a ratio above 1 is ours being better.
    Higher,
    /// Latency and memory: a ratio below 1 is ours being better.
    Lower,
}

/// Which summary figure a row feeds (the geometric mean of the group's ratios).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Group {
    /// `push=`.
    Push,
    /// `pull=`.
    Pull,
    /// `manifest_p99=`.
    ManifestP99,
    /// `idle_rss=`.
    IdleRss,
    /// In the table only.
    None,
}

/// One figure for both servers.
pub struct Row {
    /// What was measured, with its unit.
    pub what: String,
    /// Our server's figure.
    pub ours: f64,
    /// distribution's figure.
    pub theirs: f64,
    better: Better,
    group: Group,
}

impl Row {
    /// A higher-is-better row in no summary group.
    pub fn new(what: String, ours: f64, theirs: f64) -> Row {
        Row { what, ours, theirs, better: Better::Higher, group: Group::None }
    }

    /// Sets which way is better.
    pub fn better(mut self, better: Better) -> Row {
        self.better = better;
        self
    }

    /// Sets the summary group.
    pub fn group(mut self, group: Group) -> Row {
        self.group = group;
        self
    }

    /// Ours divided by theirs.
    pub fn ratio(&self) -> f64 {
        self.ours / self.theirs
    }
}

/// The table, as text: `figure | regctl | distribution | ratio`, with a mark on each ratio
/// saying whether ours is better (`+`) or worse (`-`).
pub fn table(rows: &[Row]) -> String {
    let width = rows.iter().map(|r| r.what.len()).max().unwrap_or(6).max(6);
    let mut out = String::new();
    let _ =
        writeln!(out, "{:<width$} | {:>10} | {:>12} | {:>8}", "figure", "regctl", "distribution", "ratio");
    let _ = writeln!(out, "{:-<width$}-+-{:-<10}-+-{:-<12}-+-{:-<8}", "", "", "", "");
    for row in rows {
        let ratio = row.ratio();
        let ours_better = match row.better {
            Better::Higher => ratio > 1.0,
            Better::Lower => ratio < 1.0,
        };
        let mark = if ours_better { '+' } else { '-' };
        let _ = writeln!(
            out,
            "{:<width$} | {:>10} | {:>12} | {:>7}{mark}",
            row.what,
            number(row.ours),
            number(row.theirs),
            format!("{ratio:.3}")
        );
    }
    out
}

/// Three significant figures or so, without exponents.
fn number(x: f64) -> String {
    match x.abs() {
        a if a >= 100.0 => format!("{x:.0}"),
        a if a >= 10.0 => format!("{x:.1}"),
        a if a >= 1.0 => format!("{x:.2}"),
        _ => format!("{x:.3}"),
    }
}

/// Geometric mean of the ratios of one group's rows (`NaN` when it has none).
pub fn summary_ratio(rows: &[Row], group: Group) -> f64 {
    let ratios: Vec<f64> = rows.iter().filter(|r| r.group == group).map(Row::ratio).collect();
    if ratios.is_empty() {
        return f64::NAN;
    }
    (ratios.iter().map(|r| r.ln()).sum::<f64>() / ratios.len() as f64).exp()
}

/// The last line of the output: `bench: push=R pull=R manifest_p99=R idle_rss=R`.
pub fn summary(rows: &[Row]) -> String {
    format!(
        "bench: push={:.2} pull={:.2} manifest_p99={:.3} idle_rss={:.2}",
        summary_ratio(rows, Group::Push),
        summary_ratio(rows, Group::Pull),
        summary_ratio(rows, Group::ManifestP99),
        summary_ratio(rows, Group::IdleRss),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_is_the_geometric_mean_per_group() {
        let rows = vec![
            Row::new("a".into(), 4.0, 1.0).group(Group::Push),
            Row::new("b".into(), 1.0, 1.0).group(Group::Push),
            Row::new("c".into(), 1.0, 4.0).better(Better::Lower).group(Group::ManifestP99),
            Row::new("d".into(), 1.0, 2.0).group(Group::Pull),
            Row::new("e".into(), 3.0, 1.0).group(Group::IdleRss),
            Row::new("f".into(), 9.0, 1.0),
        ];
        assert_eq!(summary(&rows), "bench: push=2.00 pull=0.50 manifest_p99=0.250 idle_rss=3.00");
    }

    #[test]
    fn table_marks_the_better_side() {
        let rows =
            vec![Row::new("fast".into(), 2.0, 1.0), Row::new("lean".into(), 2.0, 1.0).better(Better::Lower)];
        let text = table(&rows);
        assert!(text.lines().nth(2).is_some_and(|l| l.ends_with("2.000+")), "{text}");
        assert!(text.lines().nth(3).is_some_and(|l| l.ends_with("2.000-")), "{text}");
    }
}
