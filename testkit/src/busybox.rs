//! The busybox cases the end-to-end tests compare with native runs.

use std::path::Path;

/// What the busybox cases read on stdin and as `words.txt`.
pub const WORDS: &str = "pear\napple\nfig\napple\nbanana\nfig\nfig\ncherry\n";

/// Creates the files the busybox cases read, in `dir`.
pub fn busybox_files(dir: &Path) {
    std::fs::write(dir.join("words.txt"), WORDS).expect("writing a busybox input file");
    std::fs::write(dir.join("table.csv"), "id,name,qty\n3,fig,7\n1,apple,12\n2,pear,5\n").expect("writing a busybox input file");
    std::fs::create_dir(dir.join("sub")).expect("writing a busybox input file");
    std::fs::write(dir.join("sub/a"), "a\n").expect("writing a busybox input file");
    std::fs::write(dir.join("sub/b"), vec![7u8; 10000]).expect("writing a busybox input file");
}

/// The busybox applet invocations compared with native runs, in the directory
/// [`busybox_files`] made, with [`WORDS`] on stdin.
pub const BUSYBOX_CASES: &[&[&str]] = &[
    &["echo", "-n", "hello", "world"],
    &["echo", "-e", "a\\tb\\nc"],
    &["cat", "words.txt", "table.csv"],
    &["wc", "words.txt", "table.csv"],
    &["wc", "-c", "sub/b"],
    &["sort", "words.txt"],
    &["sort", "-r", "-u", "words.txt"],
    &["sort", "-t,", "-k3", "-n", "table.csv"],
    &["uniq", "-c", "words.txt"],
    &["md5sum", "words.txt", "sub/b"],
    &["sha256sum", "table.csv"],
    &["grep", "-n", "an", "words.txt"],
    &["grep", "-c", "zzz", "words.txt"],
    &["sed", "-e", "s/fig/FIG/g;2d", "words.txt"],
    &["awk", "-F,", "NR>1 { s += $3 } END { print s, NR }", "table.csv"],
    &["head", "-n", "3", "words.txt"],
    &["tail", "-n", "2", "words.txt"],
    &["tr", "a-z", "A-Z"],
    &["cut", "-d,", "-f2", "table.csv"],
    &["ls"],
    &["ls", "-a", "sub"],
    &["ls", "-1s", "sub"],
    &["seq", "1", "3", "20"],
    &["expr", "7", "*", "6"],
    &["expr", "length", "vnode"],
    &["od", "-A", "x", "-t", "x1z", "table.csv"],
    &["cat", "does-not-exist"],
];

/// A `busybox sh -c` script making symlinks and hard links and changing modes, owners and
/// times (`ln -s`, `ln`, `cp -p`, `touch -d`, `touch -h`, `chmod`, `chown`), then printing them
/// with `stat -c '%a %u %g %Y %F'`: every time it prints was set by the script, so a native run
/// prints the same. Run it in an empty directory.
pub const BUSYBOX_LINKS_SCRIPT: &str = "export TZ=UTC; echo data > f && chmod 640 f && chown 12:34 f && ln -s f s \
    && ln f h && touch -d '2020-01-02 03:04:05' f && cp -p f c && cp f plain && mkdir d && chmod 711 d \
    && touch -d '2019-05-06 07:08:09' d && ln -s d/../f s2 && touch -h -d '2021-01-01 00:00:00' s s2 \
    && touch -d '2018-01-01 00:00:00' plain && chmod u+s,g-r plain \
    && stat -c '%n %a %u %g %Y %F %h %s' f s h c plain s2; stat -c '%n %a %u %g %Y %F' d; \
    stat -L -c '%n %a %F' s s2; readlink s; readlink s2; \
    ln s2 s3; stat -c '%n %F %h' s3 s2; ln -s f f 2>&1; ln f h 2>&1; ln d d2 2>&1; chmod 600 missing 2>&1; \
    rm h s3; stat -c '%n %h' f s2; echo end";

/// The part of [`BUSYBOX_LINKS_SCRIPT`] remote storage keeps: `chmod`, `touch -d`, `touch -m`,
/// `touch -a`, `ln -s`, `touch -h`, `readlink` and `stat -c '%a %X %Y %F'` of files, symlinks
/// and a directory (no file is read between setting an access time and showing it: a native
/// `relatime` mount would move it, remote storage behaves as `noatime`). Run it in a directory of its own
/// (`sh -c SCRIPT` with the directory as `$0`).
pub const BUSYBOX_ATTRS_SCRIPT: &str = "export TZ=UTC; cd \"$0\" && echo data > f && chmod 640 f && mkdir d && chmod 711 d \
    && touch -d '2020-01-02 03:04:05' f && touch -m -d '2019-05-06 07:08:09' d && echo more >> f \
    && touch -d '2018-01-01 00:00:00' f && chmod u+s,g-r f && touch -d '2017-01-01 00:00:01' g \
    && stat -c '%n %a %Y %F %s' f g && stat -c '%n %a %Y %F' d; touch -a -d '2001-02-03 04:05:06' g \
    && stat -c '%n %X %Y' g; chmod 600 missing 2>&1; \
    ln -s f s && ln -s d/../f s2 && ln -s /nowhere s3 && touch -h -d '2021-01-01 00:00:00' s s2 \
    && stat -c '%n %a %Y %F %s' s s2 && stat -L -c '%n %a %F' s s2; readlink s; readlink s2; \
    ln -s f f 2>&1; cat s3 2>&1; mv s s4 && cat s4 && rm s4 s2 && ls; echo end";
