//! `lego top`: a live view of the cluster, refreshed every second: each component's state, load
//! and request rate, and the vNodes. `q`, Esc or Ctrl-C quits.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use lego_proto::global::{ComponentInfo, VnodeInfo};
use ratatui::crossterm::event::{self, Event, KeyCode, KeyModifiers};
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Color, Modifier, Style};
use ratatui::widgets::{Block, Paragraph, Row, Table};
use ratatui::Frame;

use crate::cluster::StateArgs;
use crate::global::{mib, registry, ManagerArgs};

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
    error: Option<String>,
}

fn fetch(addr: &str, cluster: u64) -> View {
    match registry(addr, cluster) {
        Ok((components, vnodes)) => View { components, vnodes, error: None },
        Err(e) => View { components: Vec::new(), vnodes: Vec::new(), error: Some(format!("{e:#}")) },
    }
}

fn draw(f: &mut Frame, addr: &str, view: &View) {
    let [title, comps, vnodes] =
        Layout::vertical([Constraint::Length(1), Constraint::Min(5), Constraint::Length(view.vnodes.len() as u16 + 3)]).areas(f.area());
    let status = match &view.error {
        Some(e) => format!("lego top - global manager {addr} - UNREACHABLE: {e}"),
        None => format!("lego top - global manager {addr} - {} components, {} vNodes - q quits", view.components.len(), view.vnodes.len()),
    };
    f.render_widget(Paragraph::new(status).style(Style::new().add_modifier(Modifier::BOLD)), title);
    let header = Row::new(["ID", "KIND", "ADDRESS", "STATE", "REQ/S", "USED", "CAPACITY", "SEEN"]).style(Style::new().add_modifier(Modifier::BOLD));
    let rows = view.components.iter().map(|c| {
        let state = if c.up { Style::new().fg(Color::Green) } else { Style::new().fg(Color::Red) };
        Row::new([
            c.id.to_string(),
            c.role.to_string(),
            c.addr.clone(),
            if c.up { "up" } else { "down" }.to_string(),
            format!("{:.0}", c.requests_per_s),
            mib(c.load.used_bytes),
            mib(c.load.capacity_bytes),
            format!("{:.1}s", c.last_seen_ms as f64 / 1000.0),
        ])
        .style(state)
    });
    let widths = [4, 15, 22, 6, 9, 12, 12, 7].map(Constraint::Length);
    f.render_widget(Table::new(rows, widths).header(header).block(Block::bordered().title("components")), comps);
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
