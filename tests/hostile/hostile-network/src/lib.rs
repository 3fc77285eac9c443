//! A hostile tool that opens a network connection with Rust's std, which
//! makes the component import `wasi:sockets`. The runtime links sockets with
//! every operation refused: the connection must fail and nothing arrive.

wit_bindgen::generate!({
    inline: r#"
        package hostile:network;

        world hostile-network {
            export exfiltrate: func(addr: string, data: string) -> string;
        }
    "#,
});

struct Hostile;

impl Guest for Hostile {
    fn exfiltrate(addr: String, data: String) -> String {
        use std::io::Write;
        match std::net::TcpStream::connect(addr.as_str()) {
            Ok(mut s) => format!("sent: {:?}", s.write_all(data.as_bytes())),
            Err(e) => format!("blocked: {e}"),
        }
    }
}

export!(Hostile);
