//! The results of `lego bench apps`: a Markdown table, a CSV file and a PNG plot of the
//! slowdown against local memory, in the run's directory.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use plotters::prelude::*;

use super::{Outcome, Row, Setup};

/// What the results say about the run itself.
pub struct Header {
    /// The command line.
    pub command: String,
    /// The machine (cores, memory, CPU, kernel, KVM kind).
    pub machine: String,
    /// When it started (UTC).
    pub date: String,
    /// Threads per workload.
    pub threads: usize,
    /// Measured runs per configuration.
    pub runs: usize,
    /// Warm-up runs per configuration.
    pub warmup: usize,
    /// Input scale.
    pub scale: f64,
    /// Whether Ctrl-C cut the run short.
    pub interrupted: bool,
}

/// The files written.
pub struct Files {
    /// `results.md`.
    pub markdown: PathBuf,
    /// `results.csv`.
    pub csv: PathBuf,
    /// `slowdown.png`.
    pub plot: PathBuf,
}

/// The current UTC time as `YYYYMMDD-HHMMSS`, the name of a run's directory.
pub fn timestamp() -> String {
    let secs = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86400, secs % 86400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}{m:02}{d:02}-{:02}{:02}{:02}", rem / 3600, rem / 60 % 60, rem % 60)
}

fn config_name(r: &Row) -> String {
    r.setup.map_or_else(|| "native, unlimited memory (a)".into(), |s| format!("{} ({})", s.name(), s.letter()))
}

fn secs(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64())
}

/// The reference time of `workload`, if it was measured.
fn reference(rows: &[Row], workload: &str) -> Option<Duration> {
    rows.iter().find(|r| r.workload == workload && r.setup.is_none()).and_then(|r| match r.outcome {
        Outcome::Measured { median, .. } => Some(median),
        _ => None,
    })
}

fn slowdown(rows: &[Row], r: &Row) -> Option<f64> {
    match (&r.outcome, reference(rows, &r.workload)) {
        (Outcome::Measured { median, .. }, Some(base)) => Some(median.as_secs_f64() / base.as_secs_f64()),
        _ => None,
    }
}

/// Writes the three files into `dir`.
pub fn write(dir: &Path, h: &Header, rows: &[Row]) -> anyhow::Result<Files> {
    let files = Files { markdown: dir.join("results.md"), csv: dir.join("results.csv"), plot: dir.join("slowdown.png") };
    let plot_note = match plot(&files.plot, rows) {
        Ok(()) => "![slowdown against local memory](slowdown.png)".to_string(),
        Err(e) => format!("No plot: {e:#}."),
    };
    std::fs::write(&files.markdown, markdown(h, rows, &plot_note)).context("writing results.md")?;
    std::fs::write(&files.csv, csv(rows)).context("writing results.csv")?;
    Ok(files)
}

/// The Markdown report: what ran where, then one table row per configuration.
pub fn markdown(h: &Header, rows: &[Row], plot_note: &str) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# lego bench apps, {}\n", h.date);
    let _ = writeln!(s, "- command: `{}`", h.command);
    let _ = writeln!(s, "- machine: {}", h.machine);
    let _ = writeln!(
        s,
        "- {} thread(s) per workload; median of {} run(s) after {} warm-up run(s); inputs at scale {}; \
         local memory is a share of the working set (the reference run's peak memory use)",
        h.threads, h.runs, h.warmup, h.scale
    );
    if h.interrupted {
        let _ = writeln!(s, "- **interrupted with Ctrl-C: the results are incomplete**");
    }
    let _ = writeln!(s, "\n| workload | configuration | local memory | median (s) | slowdown | min-max (s) | where the time goes |");
    let _ = writeln!(s, "|---|---|---|---:|---:|---|---|");
    for r in rows {
        let local = format!("{}% ({} KiB)", r.percent, r.local >> 10);
        let (median, slow, range) = match &r.outcome {
            Outcome::Measured { median, min, max } => (
                secs(*median),
                slowdown(rows, r).map_or("-".into(), |x| format!("{x:.2}x")),
                format!("{}-{}", secs(*min), secs(*max)),
            ),
            Outcome::Skipped(why) => ("skipped".into(), "-".into(), why.clone()),
            Outcome::TimedOut(t) => (format!("> {}", t.as_secs()), "-".into(), "timed out".into()),
            Outcome::OomKilled => ("OOM-killed".into(), "-".into(), "the OOM killer ended it: the limit is below what Linux cannot swap".into()),
            Outcome::Failed(e) => ("FAILED".into(), "-".into(), table_cell(e)),
        };
        let _ = writeln!(s, "| {} | {} | {local} | {median} | {slow} | {range} | {} |", r.workload, config_name(r), table_cell(&r.detail));
    }
    let _ = writeln!(s, "\n{plot_note}");
    s
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// One CSV line per configuration.
pub fn csv(rows: &[Row]) -> String {
    let mut s = String::from("workload,configuration,local_memory_percent,local_memory_bytes,status,median_s,min_s,max_s,slowdown,detail\n");
    for r in rows {
        let (status, median, min, max) = match &r.outcome {
            Outcome::Measured { median, min, max } => ("ok".to_string(), secs(*median), secs(*min), secs(*max)),
            Outcome::Skipped(why) => (format!("skipped: {why}"), String::new(), String::new(), String::new()),
            Outcome::TimedOut(t) => (format!("timed out after {} s", t.as_secs()), String::new(), String::new(), String::new()),
            Outcome::OomKilled => ("oom-killed".into(), String::new(), String::new(), String::new()),
            Outcome::Failed(e) => (format!("failed: {e}"), String::new(), String::new(), String::new()),
        };
        let slow = slowdown(rows, r).map_or(String::new(), |x| format!("{x:.3}"));
        let _ = writeln!(
            s,
            "{},{},{},{},{},{median},{min},{max},{slow},{}",
            csv_field(&r.workload),
            csv_field(&config_name(r)),
            r.percent,
            r.local,
            csv_field(&status),
            csv_field(&r.detail)
        );
    }
    s
}

/// Where the plot's font is (Debian's fonts-dejavu-core, which scripts/install-deps.sh installs).
const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

/// One panel per workload: slowdown (log scale) against local memory, one line per
/// configuration, the reference at 1.0.
fn plot(path: &Path, rows: &[Row]) -> anyhow::Result<()> {
    let font = std::fs::read(FONT).with_context(|| format!("reading the font {FONT} (apt-get install fonts-dejavu-core)"))?;
    plotters::style::register_font("sans-serif", FontStyle::Normal, Box::leak(font.into_boxed_slice()))
        .map_err(|_| anyhow::anyhow!("{FONT} is not a usable font"))?;
    let mut workloads: Vec<&str> = Vec::new();
    for r in rows.iter().filter(|r| reference(rows, &r.workload).is_some()) {
        if !workloads.contains(&r.workload.as_str()) {
            workloads.push(&r.workload);
        }
    }
    if workloads.is_empty() {
        anyhow::bail!("no workload was measured");
    }
    let cols = workloads.len().min(3);
    let nrows = workloads.len().div_ceil(cols);
    let root = BitMapBackend::new(path, (480 * cols as u32, 360 * nrows as u32)).into_drawing_area();
    let err = |e: DrawingAreaErrorKind<_>| anyhow::anyhow!("drawing {}: {e:?}", path.display());
    root.fill(&WHITE).map_err(err)?;
    let series: [(Setup, RGBColor); 5] = [
        (Setup::DiskSwap, RGBColor(0x99, 0x66, 0x33)),
        (Setup::Zram, RGBColor(0x22, 0x88, 0x22)),
        (Setup::RemoteSwap, RGBColor(0xcc, 0x33, 0x33)),
        (Setup::Lego(1), RGBColor(0x22, 0x44, 0xcc)),
        (Setup::Lego(2), RGBColor(0x88, 0x33, 0xaa)),
    ];
    for (area, w) in root.split_evenly((nrows, cols)).iter().zip(&workloads) {
        let points = |s: Setup| -> Vec<(f64, f64)> {
            let mut v: Vec<(f64, f64)> = rows
                .iter()
                .filter(|r| r.workload == *w && r.setup == Some(s))
                .filter_map(|r| Some((r.percent as f64, slowdown(rows, r)?)))
                .collect();
            v.sort_by(|a, b| a.0.total_cmp(&b.0));
            v
        };
        let top = series.iter().flat_map(|(s, _)| points(*s)).map(|p| p.1).fold(2.0f64, f64::max) * 1.5;
        let mut chart = ChartBuilder::on(area)
            .caption(*w, ("sans-serif", 20))
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(50)
            .build_cartesian_2d(0f64..105f64, (0.5f64..top).log_scale())
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("local memory, % of working set")
            .y_desc("slowdown vs native")
            .label_style(("sans-serif", 12))
            .draw()
            .map_err(err)?;
        chart
            .draw_series(LineSeries::new([(0.0, 1.0), (105.0, 1.0)], BLACK.stroke_width(1)))
            .map_err(err)?
            .label("native (a) = 1")
            .legend(|(x, y)| PathElement::new([(x, y), (x + 16, y)], BLACK));
        for (s, color) in series {
            let pts = points(s);
            if pts.is_empty() {
                continue;
            }
            chart
                .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
                .map_err(err)?
                .label(s.name())
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], color.stroke_width(2)));
            chart.draw_series(pts.iter().map(|&p| Circle::new(p, 3, color.filled()))).map_err(err)?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .label_font(("sans-serif", 11))
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(err)?;
    }
    root.present().map_err(err)?;
    Ok(())
}

/// `text` as one Markdown table cell: a program's multi-line output on one line, no `|`.
fn table_cell(text: &str) -> String {
    text.trim_end().replace('|', "/").replace('\n', " / ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(setup: Option<Setup>, percent: u64, secs: f64) -> Row {
        let d = Duration::from_secs_f64(secs);
        Row {
            workload: "w".into(),
            setup,
            percent,
            local: 1 << 20,
            outcome: Outcome::Measured { median: d, min: d, max: d },
            detail: "x, \"y\"".into(),
        }
    }

    #[test]
    fn table_and_csv() {
        let mut rows = vec![row(None, 100, 2.0), row(Some(Setup::Lego(1)), 25, 3.0)];
        rows.push(Row { outcome: Outcome::Skipped("needs root".into()), ..row(Some(Setup::Zram), 25, 0.0) });
        let c = csv(&rows);
        assert!(c.contains("w,\"lego, 1 mem-server (e)\",25,1048576,ok,3.000,3.000,3.000,1.500,\"x, \"\"y\"\"\""), "{c}");
        assert!(c.contains("skipped: needs root"));
        let h = Header { command: "lego bench apps".into(), machine: "m".into(), date: "d".into(), threads: 1, runs: 1, warmup: 0, scale: 1.0, interrupted: false };
        let m = markdown(&h, &rows, "");
        assert!(m.contains("| w | lego, 1 mem-server (e) | 25% (1024 KiB) | 3.000 | 1.50x |"), "{m}");
        assert!(m.contains("| skipped |"));
        // A multi-line program output stays in its row.
        let multi = Row { detail: "total 3\nthe 2\na|b 1\n".into(), ..row(None, 100, 2.0) };
        let m = markdown(&h, &[multi], "");
        assert!(m.contains("| total 3 / the 2 / a/b 1 |"), "{m}");
    }

    #[test]
    fn timestamps() {
        let t = timestamp();
        assert_eq!(t.len(), 15);
        assert!(t.starts_with("20"));
    }
}
