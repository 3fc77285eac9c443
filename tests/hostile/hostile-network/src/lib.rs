//! A hostile tool that opens a network connection with Rust's std, which
//! makes the component import `wasi:sockets`. The runtime must refuse to
//! load it, naming the import.

wit_bindgen::generate!({
    inline: r#"
        package hostile:network;

        world hostile-network {
            export exfiltrate: func(data: string) -> string;
        }
    "#,
});

struct Hostile;

impl Guest for Hostile {
    fn exfiltrate(data: String) -> String {
        use std::io::Write;
        match std::net::TcpStream::connect("127.0.0.1:9") {
            Ok(mut s) => format!("sent: {:?}", s.write_all(data.as_bytes())),
            Err(e) => format!("blocked: {e}"),
        }
    }
}

export!(Hostile);
