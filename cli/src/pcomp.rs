//! `lego pcomp`: a pComponent daemon. It registers with the global manager, reports how many
//! guest threads it runs, and runs the processes the GPM places on it, each in a VMM process of
//! its own (`lego run --local`, placed for memory and files by the same managers).

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::process::CommandExt;
use std::process::Command;

use anyhow::Context;
use lego_proto::auth::SECRET_ENV;
use lego_proto::global::Role;
use lego_proto::pcomp::RunRequest;

/// Options of `lego pcomp`.
#[derive(clap::Args)]
pub struct PcompArgs {
    /// Address to listen on for run requests.
    #[arg(long, default_value = "127.0.0.1:7050")]
    listen: String,
    #[command(flatten)]
    join: crate::global::JoinArgs,
    #[command(flatten)]
    metrics: crate::metrics::MetricsArgs,
}

/// The `lego run` command line that runs `req` here for the pComponent at `me`.
fn launch(lego: &OsString, me: &str, global: &str, cluster: u64, req: &RunRequest) -> Command {
    let mut c = Command::new(lego);
    c.args(["run", "--local", "--on-pcomp", me, "--global-mgr", global, "--vnode", &req.vnode]);
    c.args(["--cluster-id", &cluster.to_string(), "--excache-ways", &req.excache_ways.to_string()]);
    c.args(["--excache-policy", if req.excache_clock { "clock" } else { "fifo" }]);
    c.args(["--prefetch", &req.excache_prefetch.to_string()]);
    c.args(["--excache-cleaner", if req.excache_cleaner { "true" } else { "false" }]);
    c.args(["--vregion-size", &req.vregion_size.to_string(), "--mem-timeout", &req.mem_timeout_s.to_string()]);
    c.args(["--replicas", &req.replicas.to_string()]);
    if let Some(m) = req.mem {
        c.args(["--mem", &m.to_string()]);
    }
    if let Some(e) = req.excache {
        c.args(["--excache", &e.to_string()]);
    }
    if req.trace_syscalls {
        c.arg("--trace-syscalls");
    }
    if req.stats {
        c.arg("--stats");
    }
    if req.egress {
        c.arg("--egress");
    }
    for p in &req.publish {
        c.args(["--publish", p]);
    }
    // The program's environment is the VMM's own (so it stays off the command line, which any
    // user of this host can read), with this daemon's cluster secret for reaching the servers.
    c.env_clear();
    for e in &req.envp {
        let at = e.iter().position(|&b| b == b'=').unwrap_or(e.len());
        c.env(OsStr::from_bytes(&e[..at]), OsStr::from_bytes(e.get(at + 1..).unwrap_or_default()));
    }
    if let Some(secret) = std::env::var_os(SECRET_ENV) {
        c.env(SECRET_ENV, secret);
    }
    let mut argv = req.argv.iter().map(|a| OsString::from_vec(a.clone()));
    if let Some(argv0) = argv.next() {
        c.arg("--argv0").arg(argv0);
    }
    c.arg("--").arg(OsString::from_vec(req.program.clone())).args(argv);
    // The VMM starts with the client's ignored and blocked signals and no others (this
    // daemon's may differ), so its process starts as if the client had execve'd it.
    let (ignored, blocked) = (req.ignored_signals, req.blocked_signals);
    // SAFETY: between fork and exec the closure only makes open, ioctl, close, rt_sigaction and
    // rt_sigprocmask system calls (the raw calls for signals: the C library refuses the signals
    // it reserves), which are async-signal-safe, on a constant path, a descriptor it owns, a
    // kernel sigaction it owns (handler, flags, restorer, mask; no restorer is needed for
    // SIG_IGN or SIG_DFL) and a mask on its stack, and allocates nothing; SIGKILL and SIGSTOP,
    // which cannot be set, are skipped.
    unsafe {
        c.pre_exec(move || {
            // The process gives up this daemon's controlling terminal, if it has one: a placed
            // program's `/dev/tty` is none (ENXIO), never the terminal the daemon was started
            // on, whose modes it could otherwise set.
            let tty = libc::open(c"/dev/tty".as_ptr(), libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC);
            if tty >= 0 {
                libc::ioctl(tty, libc::TIOCNOTTY);
                libc::close(tty);
            }
            for sig in (1..=lego_vmm::signal::NSIG as i32).filter(|&s| s != libc::SIGKILL && s != libc::SIGSTOP) {
                let handler = if ignored & lego_vmm::signal::bit(sig) != 0 { libc::SIG_IGN } else { libc::SIG_DFL };
                let act: [u64; 4] = [handler as u64, 0, 0, 0];
                if libc::syscall(libc::SYS_rt_sigaction, sig, act.as_ptr(), std::ptr::null_mut::<u64>(), 8usize) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            if libc::syscall(libc::SYS_rt_sigprocmask, libc::SIG_SETMASK, &blocked as *const u64, std::ptr::null_mut::<u64>(), 8usize) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    c
}

/// Serves until SIGTERM or SIGINT.
pub fn run(args: PcompArgs) -> anyhow::Result<()> {
    let global = args.join.global_mgr().context("a pComponent needs --global-mgr: the managers place its processes")?;
    let lego = std::env::current_exe().context("finding the lego executable")?.into_os_string();
    let (cluster, g) = (args.join.cluster_id, global.clone());
    let pcomp = lego_vmm::pcomp::Pcomp::bind(&args.listen, cluster, move |req, me| launch(&lego, &me.to_string(), &g, cluster, req))?;
    let addr = pcomp.local_addr().to_string();
    let _metrics = args.metrics.serve("pcomp", |r| pcomp.register_metrics(r))?;
    let _heartbeats = args.join.join(Role::Processor, addr, None, pcomp.load_probe())?;
    crate::announce("pcomp", pcomp.local_addr());
    Ok(pcomp.run()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_vmm_gets_the_request_options_and_its_environment_off_the_command_line() {
        let req = RunRequest {
            vnode: "web".into(),
            program: b"/bin/-odd name".to_vec(),
            argv: vec![b"prog".to_vec(), b"--flag".to_vec()],
            envp: vec![b"A=1=2".to_vec(), b"EMPTY=".to_vec()],
            mem: Some(1 << 30),
            excache: None,
            excache_ways: 8,
            excache_clock: true,
            excache_prefetch: 8,
            excache_cleaner: false,
            vregion_size: 1 << 28,
            mem_timeout_s: 5,
            replicas: 2,
            trace_syscalls: false,
            ignored_signals: 1 << (libc::SIGINT - 1),
            blocked_signals: 0,
            stats: true,
            egress: false,
            publish: Vec::new(),
        };
        let c = launch(&"lego".into(), "10.0.0.1:7050", "10.0.0.2:7060", 3, &req);
        let args: Vec<String> = c.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
        let want = "run --local --on-pcomp 10.0.0.1:7050 --global-mgr 10.0.0.2:7060 --vnode web --cluster-id 3 --excache-ways 8 \
                    --excache-policy clock --prefetch 8 --excache-cleaner false --vregion-size 268435456 --mem-timeout 5 --replicas 2 --mem 1073741824 --stats --argv0 prog -- /bin/-odd name --flag";
        assert_eq!(args.join(" "), want);
        let env: Vec<(String, Option<String>)> =
            c.get_envs().map(|(k, v)| (k.to_string_lossy().into_owned(), v.map(|v| v.to_string_lossy().into_owned()))).collect();
        assert!(env.contains(&("A".into(), Some("1=2".into()))) && env.contains(&("EMPTY".into(), Some(String::new()))), "{env:?}");
    }
}
