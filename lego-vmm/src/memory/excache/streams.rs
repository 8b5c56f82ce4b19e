//! Sequential-miss detection for prefetch, in the spirit of Linux readahead: a few streams per
//! process, each the address its next miss is expected at and a window that grows while the
//! stream goes on.
//!
//! A miss at the page right after a stream's last miss (or right after the window prefetched for
//! it) continues the stream: the next `window` lines are prefetched, and the window doubles, from
//! [`FIRST_WINDOW`] up to the maximum. A miss on a page of the window just prefetched means a
//! prefetched line was evicted before the program reached it: the window halves. Any other miss
//! starts a new stream in place of the one missed on longest ago. Only ascending streams are
//! detected. Hits on resident lines never reach the VMM, so a stream is seen only through its
//! misses: with prefetch on, those are the misses just past each window.
//!
//! Pure bookkeeping on page addresses; fetching and installing are the cache's business.

use crate::layout::PAGE_SIZE;

/// Streams tracked at once per process.
pub const STREAMS: usize = 8;
/// Lines prefetched the first time a stream is confirmed.
pub const FIRST_WINDOW: u64 = 4;

#[derive(Clone, Copy, Default)]
struct Stream {
    /// Page of the stream's expected next miss.
    next: u64,
    /// Lines of the last window prefetched (0: seen once, nothing prefetched yet).
    window: u64,
    /// First page of the last window.
    start: u64,
    /// When the stream last missed, for replacement.
    used: u64,
    /// The stream writes: a miss of it was a write. Kept for the stream's life: the lines of a
    /// writing stream are installed dirty, and first writes never reach the VMM anyway (KVM
    /// takes them through the D bit).
    wrote: bool,
    live: bool,
}

/// What to prefetch after a miss that continues a stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    /// First page to prefetch (the page after the miss).
    pub start: u64,
    /// Lines to prefetch.
    pub lines: u64,
    /// The previous window of the stream, `[start, end)`: the program went past it.
    pub passed: (u64, u64),
    /// The stream writes: this miss or an earlier one of the stream was a write.
    pub writes: bool,
}

/// The streams of one process.
pub struct Streams {
    streams: [Stream; STREAMS],
    max: u64,
    clock: u64,
}

impl Streams {
    /// Streams with windows of at most `max` lines (0 turns detection off).
    pub fn new(max: u64) -> Streams {
        Streams { streams: [Stream::default(); STREAMS], max, clock: 0 }
    }

    /// Whether prefetch is on.
    pub fn enabled(&self) -> bool {
        self.max > 0
    }

    /// Records a miss on `page` (a write if `write`); returns the window to prefetch after it,
    /// if the miss continues a stream.
    pub fn miss(&mut self, page: u64, write: bool) -> Option<Window> {
        if !self.enabled() {
            return None;
        }
        self.clock += 1;
        let clock = self.clock;
        if let Some(s) = self.streams.iter_mut().find(|s| s.live && s.next == page) {
            let passed = (s.start, s.start + s.window * PAGE_SIZE);
            s.wrote |= write;
            let writes = s.wrote;
            s.window = if s.window == 0 { FIRST_WINDOW.min(self.max) } else { (s.window * 2).min(self.max) };
            s.start = page + PAGE_SIZE;
            s.next = s.start + s.window * PAGE_SIZE;
            s.used = clock;
            return Some(Window { start: s.start, lines: s.window, passed, writes });
        }
        if let Some(s) = self.streams.iter_mut().find(|s| s.live && s.window > 0 && (s.start..s.next).contains(&page)) {
            // A line of the window was evicted before the program reached it.
            s.window = (s.window / 2).max(1);
            s.used = clock;
            return None;
        }
        let oldest = self.streams.iter_mut().min_by_key(|s| (s.live, s.used)).expect("STREAMS > 0");
        *oldest = Stream { next: page + PAGE_SIZE, window: 0, start: page + PAGE_SIZE, used: clock, wrote: write, live: true };
        None
    }

    /// The window prefetched for the stream that asked for `asked` ended at `end` instead
    /// (the region or the vRegion ended, or the cache could not take more): the stream's next
    /// miss is expected there.
    pub fn cut(&mut self, asked: &Window, end: u64) {
        let asked_end = asked.start + asked.lines * PAGE_SIZE;
        if let Some(s) = self.streams.iter_mut().find(|s| s.live && s.start == asked.start && s.next == asked_end) {
            s.next = end.max(s.start);
            s.window = (s.next - s.start) / PAGE_SIZE;
            if s.window == 0 {
                s.live = false;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: u64 = PAGE_SIZE;

    #[test]
    fn a_sequential_stream_grows_its_window_up_to_the_maximum() {
        let mut s = Streams::new(16);
        assert_eq!(s.miss(100 * P, false), None, "first miss: a new stream");
        let w = s.miss(101 * P, false).expect("second miss continues it");
        assert_eq!((w.start, w.lines, w.writes), (102 * P, FIRST_WINDOW, false));
        // The program runs through the window; its next miss is just past it.
        let w = s.miss(106 * P, true).unwrap();
        assert_eq!((w.start, w.lines, w.passed, w.writes), (107 * P, 8, (102 * P, 106 * P), true));
        let w = s.miss(115 * P, false).unwrap();
        assert_eq!((w.lines, w.writes), (16, true), "a stream that wrote goes on writing");
        let w = s.miss(132 * P, false).unwrap();
        assert_eq!(w.lines, 16, "bounded by the maximum");
    }

    #[test]
    fn random_misses_prefetch_nothing() {
        let mut s = Streams::new(32);
        for p in [5u64, 90, 17, 3, 44, 1000, 7, 300, 12, 88, 4242, 6] {
            assert_eq!(s.miss(p * P, false), None, "page {p}");
        }
        assert_eq!(Streams::new(0).miss(P, false), None);
        let mut off = Streams::new(0);
        off.miss(P, false);
        assert_eq!(off.miss(2 * P, false), None, "prefetch off");
    }

    #[test]
    fn interleaved_streams_are_told_apart() {
        let mut s = Streams::new(8);
        for i in 0..2 {
            assert_eq!(s.miss((1000 + i) * P, false).is_some(), i > 0);
            assert_eq!(s.miss((5000 + i) * P, false).is_some(), i > 0);
        }
        assert_eq!(s.miss(1006 * P, false).unwrap().start, 1007 * P);
        assert_eq!(s.miss(5006 * P, false).unwrap().start, 5007 * P);
    }

    #[test]
    fn a_miss_inside_the_window_halves_it() {
        let mut s = Streams::new(32);
        s.miss(0, false);
        s.miss(P, false);
        s.miss(6 * P, false); // window 8: pages 7..15
        assert_eq!(s.miss(9 * P, false), None, "a prefetched line was evicted early");
        let w = s.miss(15 * P, false).unwrap();
        assert_eq!(w.lines, 8, "halved to 4, then doubled");
    }

    #[test]
    fn a_cut_window_moves_the_expected_miss_and_write_misses_mark_the_stream() {
        let mut s = Streams::new(16);
        s.miss(0, false);
        let w = s.miss(P, false).unwrap();
        s.cut(&w, 4 * P); // only pages 2 and 3 could be installed
        let w = s.miss(4 * P, true).expect("the stream goes on after the cut");
        assert_eq!((w.start, w.passed, w.writes), (5 * P, (2 * P, 4 * P), true), "a write miss marks the stream");
        s.cut(&w, w.start);
        assert_eq!(s.miss(5 * P, false), None, "a stream cut to nothing ends");
    }

    #[test]
    fn the_stream_missed_on_longest_ago_is_replaced() {
        let mut s = Streams::new(8);
        s.miss(0, false);
        for i in 1..STREAMS as u64 {
            s.miss(i * 1000 * P, false);
        }
        s.miss(P, false); // stream 0 is now the most recent
        s.miss(99_000 * P, false); // replaces the stream at 1000
        assert!(s.miss(1001 * P, false).is_none(), "forgotten");
        assert!(s.miss(99_001 * P, false).is_some());
    }
}
