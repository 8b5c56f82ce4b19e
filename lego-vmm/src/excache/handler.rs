//! The ExCache fault-handler thread: reads userfaultfd events and serves them, one at a time,
//! prefetching after a miss that continues a sequential stream.

use std::os::fd::AsRawFd;
use std::time::Instant;

use super::{Shared, PAGE_SIZE, ZERO};

/// Serves faults until `stop` becomes readable.
pub(super) fn run(mem: &Shared, stop: i32) {
    loop {
        let mut fds = [
            libc::pollfd { fd: mem.uffd.as_raw_fd(), events: libc::POLLIN, revents: 0 },
            libc::pollfd { fd: stop, events: libc::POLLIN, revents: 0 },
        ];
        // SAFETY: `fds` is a valid array of two pollfds.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
        if n < 0 {
            continue; // EINTR
        }
        if fds[1].revents != 0 {
            return;
        }
        let fault = match mem.uffd.read_fault() {
            Ok(Some(f)) => f,
            Ok(None) => continue,
            Err(e) => {
                mem.fail(format!("reading userfaultfd: {e}"));
                return;
            }
        };
        let page = (fault.addr - mem.host) & !(PAGE_SIZE - 1);
        let at = mem.host + page;
        if mem.failed.load(std::sync::atomic::Ordering::Acquire) {
            resolve_with_zeroes(mem, at);
            continue;
        }
        let started = Instant::now();
        let mut st = mem.state();
        let result = if fault.wp {
            // First write to a clean line: it is dirty from now on. Several vCPUs may have
            // written the same clean line at once: the first of their faults dirties it, the
            // others find it dirty and only wake. If the line was evicted since the fault was
            // queued, waking the writer makes it fault again as a miss.
            match st.sets.get(page) {
                Some(line) if !line.dirty => {
                    st.sets.mark_dirty(page);
                    st.stats.dirtied += 1;
                    if st.note_use(page) {
                        st.streams.wrote(page);
                    }
                    mem.uffd.write_protect(at, PAGE_SIZE, false)
                        .map(|()| false)
                        .map_err(|e| format!("unprotecting {page:#x}: {e}"))
                }
                _ => Ok(false),
            }
        } else {
            let misses = st.stats.misses;
            let r = st.serve_miss(mem, page, fault.write);
            if st.stats.misses != misses {
                let _ = st.stats.miss_ns.record(started.elapsed().as_nanos() as u64);
            }
            r
        };
        let prefetch = st.streams.enabled();
        drop(st);
        let installed = match result {
            Ok(installed) => installed,
            Err(msg) => {
                mem.fail(format!("memory of the process failed: {msg}"));
                resolve_with_zeroes(mem, at);
                continue;
            }
        };
        if let Err(e) = mem.uffd.wake(at, PAGE_SIZE) {
            mem.fail(format!("waking the faulting thread at {page:#x}: {e}"));
            continue;
        }
        // The faulting thread runs on while the next lines of its stream come in.
        if installed && prefetch {
            if let Err(msg) = mem.state().prefetch(mem, page, fault.write) {
                mem.fail(format!("memory of the process failed: {msg}"));
            }
        }
    }
}

/// After a failure, faults are resolved with zeroes so that no thread waits forever; the run
/// loop ends the program before anything derived from them leaves the vNode.
fn resolve_with_zeroes(mem: &Shared, at: u64) {
    let st = mem.state();
    // SAFETY: the source is our zero page. Failure (EEXIST: the page is present; it may only be
    // write-protected) is followed by lifting any write protection.
    if unsafe { mem.uffd.copy(at, st.buf.page(ZERO.0).as_ptr(), PAGE_SIZE, false) }.is_err() {
        let _ = mem.uffd.write_protect(at, PAGE_SIZE, false);
    }
    drop(st);
    let _ = mem.uffd.wake(at, PAGE_SIZE);
}
