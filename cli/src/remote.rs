//! The client side of a run session: `lego run` placed on a pComponent. This shell's standard
//! input goes to the program, its output and error come back here, and its exit status becomes
//! this command's.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use anyhow::{bail, Context};
use lego_proto::handshake::{ComponentKind, Hello};
use lego_proto::pcomp::{recv, send, FromPcomp, RunRequest, ToPcomp, CHUNK};
use lego_proto::transport::TcpTransport;

/// How long the pComponent may take to accept the session.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs `req` on the pComponent at `pcomp`; returns the program's exit status.
pub fn run(pcomp: &str, cluster: u64, req: RunRequest) -> anyhow::Result<u8> {
    let hello = Hello::new(ComponentKind::Client, cluster);
    let mut conn = TcpTransport::connect(pcomp, hello, CONNECT_TIMEOUT).with_context(|| format!("pComponent {pcomp}"))?.into_stream();
    send(&mut conn, &ToPcomp::Run(req))?;
    match recv::<FromPcomp>(&mut conn)? {
        Some(FromPcomp::Started { pid }) => tracing::info!(%pcomp, pid, "started"),
        Some(FromPcomp::Refused(why)) => bail!("pComponent {pcomp} refused the process: {why}"),
        Some(other) => bail!("pComponent {pcomp} answered {other:?} to a run request"),
        None => bail!("pComponent {pcomp} closed the session before starting the process"),
    }
    // The program may run for as long as it likes, silently.
    conn.set_read_timeout(None)?;
    conn.set_write_timeout(None)?;
    let input = conn.try_clone()?;
    // This thread may stay blocked reading a terminal after the program ended; the process
    // exits anyway.
    std::thread::Builder::new().name("stdin".into()).spawn(move || forward_stdin(input))?;
    let (mut stdout, mut stderr) = (std::io::stdout(), std::io::stderr());
    loop {
        match recv::<FromPcomp>(&mut conn).with_context(|| format!("pComponent {pcomp}"))? {
            Some(FromPcomp::Stdout(b)) => {
                // A closed standard output (`| head`) is the program's problem, as it is locally.
                let _ = stdout.write_all(&b).and_then(|()| stdout.flush());
            }
            Some(FromPcomp::Stderr(b)) => {
                let _ = stderr.write_all(&b);
            }
            Some(FromPcomp::Exited { status }) => return Ok(status),
            Some(other) => bail!("pComponent {pcomp} sent {other:?} during the run"),
            None => bail!("pComponent {pcomp} closed the session before the process ended"),
        }
    }
}

/// Sends this shell's standard input to the program, then says it ended.
fn forward_stdin(mut conn: TcpStream) {
    let mut stdin = std::io::stdin().lock();
    let mut buf = vec![0u8; CHUNK];
    loop {
        let msg = match stdin.read(&mut buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Ok(0) | Err(_) => ToPcomp::StdinClosed,
            Ok(n) => ToPcomp::Stdin(buf[..n].to_vec()),
        };
        let last = msg == ToPcomp::StdinClosed;
        if send(&mut conn, &msg).is_err() || last {
            return;
        }
    }
}
