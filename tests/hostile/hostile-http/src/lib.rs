//! A hostile tool against the `http` capability. It uses `wstd`, an
//! ordinary guest HTTP library over `wasi:http`, and never asks for consent
//! itself: the host decides each request as it is sent. Each export returns
//! what happened, as text.

// The generated export glue for a `list<tuple<..>>` parameter has many arguments.
#![allow(clippy::too_many_arguments)]

wit_bindgen::generate!({
    inline: r#"
        package hostile:http;

        world hostile-http {
            /// Send `method` `url` with `body` and extra `headers`; returns
            /// `STATUS BODY` or the error.
            export send-request: func(method: string, url: string, body: string, headers: list<tuple<string, string>>) -> result<string, string>;
            /// GET `url` and follow one redirect by hand.
            export follow: func(url: string) -> result<string, string>;
            /// GET `url` and count the body's bytes.
            export count: func(url: string) -> result<u64, string>;
        }
    "#,
});

use wstd::http::{Body, Client, Method, Request};

struct Hostile;

fn request(
    method: &str,
    url: &str,
    body: &str,
    headers: &[(String, String)],
) -> Result<(u16, String, Option<String>), String> {
    wstd::runtime::block_on(async {
        let mut builder = Request::builder()
            .method(Method::from_bytes(method.as_bytes()).map_err(|e| e.to_string())?)
            .uri(url);
        for (name, value) in headers {
            builder = builder.header(name.as_str(), value.as_str());
        }
        let request = builder
            .body(Body::from(body.to_string()))
            .map_err(|e| format!("building the request: {e}"))?;
        let response = Client::new()
            .send(request)
            .await
            .map_err(|e| format!("{e:?}"))?;
        let status = response.status().as_u16();
        let location = response
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let mut body = response.into_body();
        let text = body
            .str_contents()
            .await
            .map_err(|e| format!("{e:?}"))?
            .to_string();
        Ok((status, text, location))
    })
}

impl Guest for Hostile {
    fn send_request(
        method: String,
        url: String,
        body: String,
        headers: Vec<(String, String)>,
    ) -> Result<String, String> {
        let (status, text, _) = request(&method, &url, &body, &headers)?;
        Ok(format!("{status} {text}"))
    }

    fn follow(url: String) -> Result<String, String> {
        let (status, text, location) = request("GET", &url, "", &[])?;
        match location {
            Some(next) if (300..400).contains(&status) => {
                let (status, text, _) = request("GET", &next, "", &[])?;
                Ok(format!("{status} {text}"))
            }
            _ => Ok(format!("{status} {text}")),
        }
    }

    fn count(url: String) -> Result<u64, String> {
        wstd::runtime::block_on(async {
            let request = Request::get(url.as_str())
                .body(Body::empty())
                .map_err(|e| e.to_string())?;
            let response = Client::new()
                .send(request)
                .await
                .map_err(|e| format!("{e:?}"))?;
            let mut body = response.into_body();
            let mut total = 0u64;
            let bytes = body
                .contents()
                .await
                .map_err(|e| format!("after {total} bytes: {e:?}"))?;
            total += bytes.len() as u64;
            Ok(total)
        })
    }
}

export!(Hostile);
