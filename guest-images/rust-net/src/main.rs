//! Rust `std::net` in a vNode: a TCP echo over loopback with a server thread, UDP datagrams
//! whose sender address is checked, and a read timeout. Prints the same natively and in a vNode.

use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::time::Duration;

fn main() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("local_addr");
    let server = std::thread::spawn(move || {
        let (conn, peer) = listener.accept().expect("accept");
        assert_eq!(conn.peer_addr().unwrap(), peer);
        let mut out = conn.try_clone().unwrap();
        for line in BufReader::new(conn).lines() {
            let line = line.expect("read line");
            writeln!(out, "echo: {line}").expect("write");
        }
        peer
    });
    let mut c = TcpStream::connect(addr).expect("connect");
    c.set_nodelay(true).unwrap();
    assert_eq!(c.peer_addr().unwrap(), addr);
    let mut lines = BufReader::new(c.try_clone().unwrap()).lines();
    for word in ["lego", "vnode", "sockets"] {
        writeln!(c, "{word}").unwrap();
        println!("{}", lines.next().unwrap().unwrap());
    }
    c.shutdown(std::net::Shutdown::Write).unwrap();
    let peer = server.join().unwrap();
    println!("tcp: server saw the client at its own address: {}", peer == c.local_addr().unwrap());

    let a = UdpSocket::bind("127.0.0.1:0").expect("udp bind");
    let b = UdpSocket::bind("127.0.0.1:0").expect("udp bind");
    a.send_to(b"datagram one", b.local_addr().unwrap()).unwrap();
    let mut buf = [0u8; 64];
    let (n, from) = b.recv_from(&mut buf).unwrap();
    println!("udp: {:?} from the sender: {}", String::from_utf8_lossy(&buf[..n]), from == a.local_addr().unwrap());
    b.connect(a.local_addr().unwrap()).unwrap();
    b.send(b"reply").unwrap();
    let n = a.recv(&mut buf).unwrap();
    println!("udp reply: {:?}", String::from_utf8_lossy(&buf[..n]));
    b.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let e = b.recv(&mut buf).unwrap_err();
    println!("udp read timeout: {}", matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut));
}
