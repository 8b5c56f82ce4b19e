//! Memory replication and fail-over (LegoOS §4.7) with real processes: three mem-servers (the
//! home, which has the most memory, then the primary, then the secondary of every vRegion)
//! in front of a storage server, where the secondary's backup log goes, a guest program at a
//! small ExCache with `--replicas 2`, and a mem-server (or the storage server) killed or stopped
//! while it runs. The program's output must be byte-identical to native and its status 0; a
//! process that loses both copies ends with status 125 and a message naming both servers.

// A test: an unwrap that fails is the test failing (helpers outside #[test] functions too).
#![allow(clippy::unwrap_used)]

use lego_testkit as common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;

/// How long a replicated run may take before it counts as hung. Far above what the runs need
/// alone (checksum at 256K, the longest, takes ~50 s on these nested-virtualisation machines,
/// every miss an exit), since `make test` runs two tests at once: a deadline of 90 s failed a
/// run that was only slow.
const RUN_DEADLINE: Duration = common::process::DEADLINE;

fn out_dir() -> PathBuf {
    image("words.txt").parent().unwrap().to_path_buf()
}

/// The storage server of the mem-servers, and its directory.
struct Storage {
    server: Server,
    _dir: tempfile::TempDir,
}

/// A mem-server of `capacity` with a metrics endpoint, in front of `storage`, with a backup log
/// of `backup_log`.
fn mem_server(capacity: &str, storage: &Storage, backup_log: &str) -> Server {
    let args = ["--capacity", capacity, "--metrics", "127.0.0.1:0", "--storage-server", &storage.server.addr, "--backup-log", backup_log];
    Server::start(&[&["mem-server", "--listen", "127.0.0.1:0"][..], &args].concat())
}

/// The home (most free memory: the VMM picks it), the primary (the most free of the others)
/// and the secondary, in that order, with backup logs of `backup_log`, and their storage server.
fn trio_logging(backup_log: &str) -> ([Server; 3], Storage) {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage { server: Server::storage(dir.path(), "127.0.0.1:0", &[]), _dir: dir };
    ([mem_server("1G", &storage, backup_log), mem_server("768M", &storage, backup_log), mem_server("512M", &storage, backup_log)], storage)
}

/// [`trio_logging`] with the default backup log.
fn trio() -> ([Server; 3], Storage) {
    trio_logging("64M")
}

/// A metric of a mem-server.
fn metric(s: &Server, name: &str) -> f64 {
    let (_, body) = scrape(s.metrics.as_deref().expect("started with --metrics"));
    sample(&body, name).unwrap_or(0.0)
}

/// Page requests of `op` a mem-server has served.
fn served(s: &Server, op: &str) -> f64 {
    metric(s, &format!("lego_mem_requests_total{{op=\"{op}\"}}"))
}

/// The count on the `--stats` line `name`: the first word after it.
fn count(stderr: &str, name: &str) -> u64 {
    let line = stderr.lines().find(|l| l.contains(name)).unwrap_or_else(|| panic!("no '{name}' in {stderr}"));
    let after = line.split(name).nth(1).and_then(|rest| rest.split_whitespace().next());
    after.and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("no count in '{line}'"))
}

/// `lego run --replicas 2` of `prog args` on the three servers, with a few more `options`.
fn replicated(servers: &[Server; 3], excache: &str, options: &[&str], prog: &Path, args: &[&str]) -> std::process::Command {
    let mut o = vec!["--replicas", "2", "--excache", excache, "--stats"];
    for s in servers {
        o.extend(["--mem-server", s.addr.as_str()]);
    }
    o.extend(options);
    lego(&o, prog, args, &out_dir())
}

/// Waits until the primary (server 1) has served misses of the running program and the
/// secondary (server 2) has received write-backs but served no miss: replication is under
/// way and the servers play the roles the test gives them.
fn running(servers: &[Server; 3]) {
    poll("the primary to serve misses", Duration::from_secs(30), || {
        let fetched = served(&servers[1], "fetch") + served(&servers[1], "flush_fetch");
        let replicated = served(&servers[2], "flush");
        if fetched > 200.0 && replicated > 50.0 {
            Ok(())
        } else {
            Err(format!("primary fetched {fetched}, secondary received {replicated}"))
        }
    });
    assert_eq!(served(&servers[2], "fetch") + served(&servers[2], "flush_fetch"), 0.0, "the secondary served a miss before any failure");
}

/// Runs `cmd` (which must still be running when `fault` strikes) and checks it printed what
/// `prog args` prints natively, with status 0 and at least one fail-over.
fn survives(what: &str, cmd: std::process::Command, prog: &Path, args: &[&str], fault: impl FnOnce() + Send) -> Run {
    let want = native(prog, args, &out_dir());
    assert_eq!(want.status, Some(0));
    let begun = Instant::now();
    let got = std::thread::scope(|s| {
        let run = s.spawn(|| run(cmd, RUN_DEADLINE, what));
        fault();
        run.join().unwrap()
    });
    assert_eq!(got.status, Some(0), "{what}: stderr: {}", got.stderr);
    assert_eq!(got.stdout, want.stdout, "{what}: output differs; stderr: {}", got.stderr);
    assert!(got.stderr.contains("fail-overs"), "{what}: no fail-over happened in {:?}: {}", begun.elapsed(), got.stderr);
    assert!(stat(&got.stderr, "replicated lines") > 0, "{what}: {}", got.stderr);
    got
}

/// `kill -9` of the primary mem-server while `prog args` runs at `excache`. The backup logs
/// are small, so that most of the secondary's pages are in its backup file by then: the
/// promoted secondary serves them from there, and the rebuild of a primary reads them there.
fn primary_killed(prog: &str, args: &[&str], excache: &str) {
    let (servers, _storage) = trio_logging("1M");
    let prog = image(prog);
    let cmd = replicated(&servers, excache, &[], &prog, args);
    let what = format!("{} {args:?} at {excache}, primary killed", prog.display());
    survives(&what, cmd, &prog, args, || {
        running(&servers);
        servers[1].signal(libc::SIGKILL);
    });
    assert!(metric(&servers[2], "lego_mem_backup_flushed_pages_total") > 0.0, "{what}: the secondary's log reached no backup file");
}

#[test]
fn checksum_survives_its_primary_killed() {
    if kvm() {
        primary_killed("checksum", &["1"], "256K");
    }
}

#[test]
fn sort_survives_its_primary_killed() {
    if kvm() {
        primary_killed("sort", &["1048576", "3"], "1M");
    }
}

#[test]
fn threaded_word_count_survives_its_primary_killed() {
    if kvm() {
        primary_killed("wordcount", &["words.txt", "4"], "1M");
    }
}

/// The secondary keeps a bounded log, flushed to a backup file on the storage server: it holds
/// no page frame, its log never holds more than its size, and it flushes more pages than the
/// log holds. The program's output is native's, with no fail-over.
#[test]
fn the_secondary_keeps_a_bounded_log_flushed_to_a_backup_file() {
    if !kvm() {
        return;
    }
    let (servers, _storage) = trio_logging("1M");
    let prog = image("sort");
    let args = ["1048576", "3"];
    let want = native(&prog, &args, &out_dir());
    let cmd = replicated(&servers, "1M", &[], &prog, &args);
    let got = std::thread::scope(|s| {
        let run = s.spawn(|| run(cmd, RUN_DEADLINE, "sort, replicated to a backup log"));
        running(&servers);
        poll("the secondary to flush more pages than its log holds", Duration::from_secs(60), || {
            let flushed = metric(&servers[2], "lego_mem_backup_flushed_pages_total");
            if flushed > 256.0 {
                Ok(())
            } else {
                Err(format!("{flushed} pages flushed"))
            }
        });
        assert!(metric(&servers[2], "lego_mem_backup_log_unflushed_bytes") <= f64::from(1 << 20));
        assert_eq!(metric(&servers[2], "lego_mem_stored_bytes"), 0.0, "the secondary holds no page frame");
        run.join().unwrap()
    });
    assert_eq!((got.status, &got.stdout), (Some(0), &want.stdout), "{}", got.stderr);
    assert!(!got.stderr.contains("fail-overs"), "{}", got.stderr);
}

/// The storage server under the secondary's backup log is killed while the program runs: the
/// log fills, replication is suspended (said in `--stats`), and the program goes on to print
/// what it prints natively.
#[test]
fn a_storage_server_lost_under_the_backup_log_suspends_replication_and_the_program_goes_on() {
    if !kvm() {
        return;
    }
    let (servers, storage) = trio_logging("1M");
    let prog = image("sort");
    let args = ["1048576", "3"];
    let cmd = replicated(&servers, "1M", &[], &prog, &args);
    let got = survives("sort, storage server killed", cmd, &prog, &args, || {
        running(&servers);
        storage.server.signal(libc::SIGKILL);
    });
    assert!(count(&got.stderr, "replication suspended") >= 1, "{}", got.stderr);
    assert!(metric(&servers[2], "lego_mem_backup_refused_writes_total") > 0.0);
}

/// A primary lost while replication is suspended (its secondary's backup log full, the storage
/// server gone) is reported as any loss of the last copy: status 125, naming the server that
/// failed and the one replication was suspended to.
#[test]
fn a_primary_lost_while_replication_is_suspended_ends_the_process_saying_so() {
    if !kvm() {
        return;
    }
    let (servers, storage) = trio_logging("1M");
    let prog = image("sort");
    let cmd = replicated(&servers, "1M", &[], &prog, &["2097152", "3"]);
    let got = std::thread::scope(|s| {
        let run = s.spawn(|| run(cmd, RUN_DEADLINE, "sort, storage then primary killed"));
        running(&servers);
        storage.server.signal(libc::SIGKILL);
        poll("the secondary to refuse write-backs", Duration::from_secs(30), || {
            let refused = metric(&servers[2], "lego_mem_backup_refused_writes_total");
            if refused > 0.0 {
                Ok(())
            } else {
                Err("none refused".into())
            }
        });
        servers[1].signal(libc::SIGKILL);
        run.join().unwrap()
    });
    assert_eq!(got.status, Some(125), "{}", got.stderr);
    assert!(got.stderr.contains(&servers[1].addr) && got.stderr.contains("was suspended before"), "{}", got.stderr);
}

#[test]
fn sort_survives_its_secondary_killed() {
    if !kvm() {
        return;
    }
    let (servers, _storage) = trio();
    let prog = image("sort");
    let args = ["1048576", "3"];
    let cmd = replicated(&servers, "1M", &[], &prog, &args);
    survives("sort, secondary killed", cmd, &prog, &args, || {
        running(&servers);
        servers[2].signal(libc::SIGKILL);
    });
}

#[test]
fn losing_both_copies_ends_the_process_naming_both_servers() {
    if !kvm() {
        return;
    }
    let (servers, _storage) = trio();
    let prog = image("checksum");
    let cmd = replicated(&servers, "256K", &[], &prog, &["1"]);
    let got = std::thread::scope(|s| {
        let run = s.spawn(|| run(cmd, Duration::from_secs(60), "checksum, both copies killed"));
        running(&servers);
        // Both at once: given a moment, the VMM would rebuild the lost copy on the home.
        servers[1].signal(libc::SIGKILL);
        servers[2].signal(libc::SIGKILL);
        run.join().unwrap()
    });
    assert_eq!(got.status, Some(125), "{}", got.stderr);
    for s in &servers[1..] {
        assert!(got.stderr.contains(&s.addr), "the message names {}: {}", s.addr, got.stderr);
    }
    assert!(got.stderr.contains("no other copy"), "{}", got.stderr);
    // The process is gone, so its home (which survived) released it, though its memory failed.
    let (_, body) = scrape(servers[0].metrics.as_deref().expect("started with --metrics"));
    assert_eq!(sample(&body, "lego_mem_processes"), Some(0.0), "the home still holds the process:\n{body}");
}

/// A primary stopped past `--mem-timeout` is failed over; continued after the promotion, it
/// must not serve the process again, and no write may be lost (the output is native's).
#[test]
fn a_stopped_primary_is_fenced_off_after_the_promotion() {
    if !kvm() {
        return;
    }
    let (servers, _storage) = trio();
    let prog = image("sort");
    let args = ["2097152", "3"];
    // A timeout of 3 s, not 1: under load the home's own answers (a rebuild copies a vRegion
    // within a memory call) can take over a second, and the home has no second copy.
    let cmd = replicated(&servers, "2M", &["--mem-timeout", "3"], &prog, &args);
    let page_requests = |s: &Server| ["fetch", "flush_fetch", "flush"].iter().map(|op| served(s, op)).sum::<f64>();
    let mut after_cont = 0.0;
    survives("sort, primary stopped then continued", cmd, &prog, &args, || {
        running(&servers);
        servers[1].signal(libc::SIGSTOP);
        // Past the timeout: the VMM has promoted the secondary by now, and the home may have
        // rebuilt a primary on its own server from it (neither served a miss before).
        std::thread::sleep(Duration::from_millis(4500));
        let elsewhere = [&servers[0], &servers[2]].iter().map(|s| served(s, "fetch") + served(s, "flush_fetch")).sum::<f64>();
        assert!(elsewhere > 0.0, "the other copy serves the misses once the primary is silent");
        servers[1].signal(libc::SIGCONT);
        // The requests queued while it was stopped drain; after that, nothing more may come.
        std::thread::sleep(Duration::from_millis(300));
        after_cont = page_requests(&servers[1]);
    });
    assert_eq!(page_requests(&servers[1]), after_cont, "the old primary got page requests after its promotion was over");
}

/// After a fail-over the VMM has the home rebuild a second copy at once (here on the home's
/// server, the only one left): once the VMM writes back to it, the promoted primary can be
/// killed too and the program still ends as natively, with two fail-overs. `prog` is a program
/// that makes memory calls as it runs (which report the loss too) or one that makes none after
/// its start (the process's repairer thread reports it).
fn rebuilt_copy_survives(prog: &str, args: &[&str], excache: &str) {
    let (servers, _storage) = trio();
    let prog = image(prog);
    let cmd = replicated(&servers, excache, &[], &prog, args);
    let what = format!("{} {args:?}: primary killed, then the promoted secondary", prog.display());
    let got = survives(&what, cmd, &prog, args, || {
        running(&servers);
        servers[1].signal(libc::SIGKILL);
        // The home's server gets page writes only as the rebuilt secondary; the first one says
        // the copy is there (the program's memory is one vRegion). Waiting for more let a
        // loaded run end before the second kill.
        poll("the rebuilt secondary to receive write-backs", Duration::from_secs(30), || {
            let n = served(&servers[0], "flush");
            if n > 0.0 {
                Ok(())
            } else {
                Err(format!("{n} write-backs"))
            }
        });
        servers[2].signal(libc::SIGKILL);
    });
    assert_eq!(count(&got.stderr, "fail-overs"), 2, "{what}: the second kill struck after the end: {}", got.stderr);
    assert!(count(&got.stderr, "copies rebuilt") >= 1, "{what}: {}", got.stderr);
}

#[test]
fn a_rebuilt_copy_survives_a_second_failure() {
    if kvm() {
        rebuilt_copy_survives("malloc", &[], "4M");
    }
}

/// checksum makes no memory call after its one `malloc`: the copy is rebuilt all the same.
#[test]
fn a_copy_is_rebuilt_without_waiting_for_a_memory_call() {
    if kvm() {
        rebuilt_copy_survives("checksum", &["1"], "512K");
    }
}
