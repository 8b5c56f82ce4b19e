//! `lego top`: a live view of the cluster, refreshed every second: each component's state, load
//! and request rate; each running process's ExCache (misses and evictions per second, miss
//! latency percentiles, bytes moved); and the vNodes. `q`, Esc or Ctrl-C quits.
//!
//! The ExCache hit ratio is not shown: hits never leave the guest (they are plain memory
//! accesses), so the VMM cannot count them.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use lego_proto::global::{ComponentInfo, ProcessReport, VnodeInfo};
use ratatui::crossterm::event::{self, Event, KeyCode, KeyModifiers};
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Color, Modifier, Style};
use ratatui::widgets::{Block, Paragraph, Row, Table};
use ratatui::Frame;

use crate::cluster::StateArgs;
use crate::global::{mib, registry, threads, uptime, ClusterView, ManagerArgs};

/// Options of `lego top`.
#[derive(clap::Args)]
pub struct TopArgs {
    #[command(flatten)]
    at: ManagerArgs,
}

/// What one refresh found.
struct View {
    components: Vec<ComponentInfo>,
    vnodes: Vec<VnodeInfo>,
    processes: Vec<ProcessReport>,
    error: Option<String>,
}

fn fetch(addr: &str, cluster: u64) -> View {
    match registry(addr, cluster) {
        Ok(ClusterView { components, vnodes, processes, .. }) => View { components, vnodes, processes, error: None },
        Err(e) => View { components: Vec::new(), vnodes: Vec::new(), processes: Vec::new(), error: Some(format!("{e:#}")) },
    }
}

/// Bytes in a MiB, for rates.
const MIB: f64 = (1 << 20) as f64;

fn us(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.0}"))
}

fn draw(f: &mut Frame, addr: &str, view: &View) {
    let [title, comps, procs, vnodes] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(5),
        Constraint::Length(view.processes.len() as u16 + 3),
        Constraint::Length(view.vnodes.len() as u16 + 3),
    ])
    .areas(f.area());
    let status = match &view.error {
        Some(e) => format!("lego top - global manager {addr} - UNREACHABLE: {e}"),
        None => format!(
            "lego top - global manager {addr} - {} components, {} processes, {} vNodes - q quits",
            view.components.len(),
            view.processes.len(),
            view.vnodes.len()
        ),
    };
    f.render_widget(Paragraph::new(status).style(Style::new().add_modifier(Modifier::BOLD)), title);
    let header = Row::new(["ID", "KIND", "ADDRESS", "STATE", "REQ/S", "IN MiB/s", "OUT MiB/s", "USED", "CAPACITY", "THREADS", "SEEN"]).style(Style::new().add_modifier(Modifier::BOLD));
    let rows = view.components.iter().map(|c| {
        let state = if c.up { Style::new().fg(Color::Green) } else { Style::new().fg(Color::Red) };
        Row::new([
            c.id.to_string(),
            c.role.to_string(),
            c.addr.clone(),
            if c.up { "up" } else { "down" }.to_string(),
            format!("{:.0}", c.requests_per_s),
            format!("{:.1}", c.bytes_in_per_s / MIB),
            format!("{:.1}", c.bytes_out_per_s / MIB),
            mib(c.load.used_bytes),
            mib(c.load.capacity_bytes),
            threads(c),
            format!("{:.1}s", c.last_seen_ms as f64 / 1000.0),
        ])
        .style(state)
    });
    let widths = [4, 15, 22, 6, 9, 9, 10, 12, 12, 8, 7].map(Constraint::Length);
    f.render_widget(Table::new(rows, widths).header(header).block(Block::bordered().title("components")), comps);
    let header = Row::new([
        "VNODE", "PID", "PCOMPONENT", "HOME", "MISSES/S", "P50 US", "P99 US", "EVICT/S", "IN MiB", "OUT MiB", "REPL MiB", "EXCACHE", "UP", "PROGRAM",
    ])
    .style(Style::new().add_modifier(Modifier::BOLD));
    let rows = view.processes.iter().map(|p| {
        Row::new([
            p.who.vnode.clone(),
            p.who.pid.to_string(),
            p.who.pcomp.clone(),
            p.who.home.clone(),
            format!("{:.0}", p.cache.misses_per_s),
            us(p.cache.miss_p50_us),
            us(p.cache.miss_p99_us),
            format!("{:.0}", p.cache.evictions_per_s),
            (p.cache.bytes_in >> 20).to_string(),
            (p.cache.bytes_out >> 20).to_string(),
            (p.cache.replicated_bytes >> 20).to_string(),
            format!("{}/{}", p.cache.resident_bytes >> 20, mib(p.cache.excache_bytes)),
            uptime(p.who.started_unix_ms),
            p.who.program.clone(),
        ])
    });
    let widths = [10, 8, 22, 22, 9, 7, 7, 8, 7, 8, 9, 14, 7].map(Constraint::Length).into_iter().chain([Constraint::Min(20)]);
    f.render_widget(Table::new(rows, widths).header(header).block(Block::bordered().title("processes (ExCache)")), procs);
    let header = Row::new(["ID", "VNODE", "VIP", "MEM", "EXCACHE", "STORAGE"]).style(Style::new().add_modifier(Modifier::BOLD));
    let rows = view.vnodes.iter().map(|v| {
        Row::new([
            v.id.to_string(),
            v.name.clone(),
            Ipv4Addr::from(v.vip).to_string(),
            mib(v.mem_bytes),
            mib(v.excache_bytes),
            v.storage.clone().unwrap_or_else(|| "-".into()),
        ])
    });
    let widths = [4, 20, 15, 10, 10, 22].map(Constraint::Length);
    f.render_widget(Table::new(rows, widths).header(header).block(Block::bordered().title("vNodes")), vnodes);
}

/// Runs the live view until the user quits.
pub fn run(args: &TopArgs, state: &StateArgs) -> anyhow::Result<()> {
    let addr = args.at.addr(state)?;
    let cluster = args.at.cluster_id();
    let mut terminal = ratatui::init();
    let result = (|| -> anyhow::Result<()> {
        loop {
            let view = fetch(&addr, cluster);
            terminal.draw(|f| draw(f, &addr, &view))?;
            let next = Instant::now() + Duration::from_secs(1);
            while let Some(left) = next.checked_duration_since(Instant::now()) {
                if event::poll(left)? {
                    if let Event::Key(k) = event::read()? {
                        let ctrl_c = k.code == KeyCode::Char('c') && k.modifiers.contains(KeyModifiers::CONTROL);
                        if matches!(k.code, KeyCode::Char('q') | KeyCode::Esc) || ctrl_c {
                            return Ok(());
                        }
                    }
                }
            }
        }
    })();
    ratatui::restore();
    result
}
