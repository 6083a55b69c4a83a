//! Real servers and helpers shared by the integration tests.

pub mod smtp;

/// A loopback port that was free a moment ago (bind port 0, read, drop).
#[allow(dead_code)]
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr").port()
}
