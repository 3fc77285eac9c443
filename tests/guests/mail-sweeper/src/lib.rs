//! Deletes a folder's messages one at a time, each with its own consent
//! request: many small effects, for crash and stop tests.

wit_bindgen::generate!({
    inline: r#"
        package test:mail-sweeper;

        world mail-sweeper {
            include agentcap:tools/mail-tool@0.1.0;

            /// Delete every message of `folder`, one per consent request;
            /// returns how many were deleted before the first refusal.
            export sweep: func(folder: string) -> result<u32, string>;

            /// List `folder` and read its first message (two consent
            /// requests, two capability calls); returns the subject.
            export read-first: func(folder: string) -> result<string, string>;

            /// Read message `id` (one consent request, one capability
            /// call); returns its subject.
            export read-one: func(id: string) -> result<string, string>;
        }
    "#,
    path: "../../../tools-wit/wit",
    with: {
        "agentcap:tools/consent@0.1.0": agentcap_sdk::consent,
        "agentcap:tools/mail@0.1.0": agentcap_sdk::mail,
    },
});

use agentcap_sdk::{Explain, Intent, mail, request};

struct Sweeper;

impl Guest for Sweeper {
    fn sweep(folder: String) -> Result<u32, String> {
        let token = request(
            Intent::new("mail.list")
                .target(&folder)
                .summary("see what to sweep"),
        )
        .map_err(|d| d.explain())?;
        let messages = mail::list(&token, &folder).map_err(|e| e.explain())?;
        let mut deleted = 0;
        for m in messages {
            let ids = [m.id];
            let token = match request(Intent::new("mail.delete").targets(&ids).summary("sweep")) {
                Ok(t) => t,
                Err(d) => return Err(format!("after {deleted}: {}", d.explain())),
            };
            if let Err(e) = mail::delete(&token, &ids) {
                return Err(format!("after {deleted}: {}", e.explain()));
            }
            deleted += 1;
        }
        Ok(deleted)
    }

    fn read_first(folder: String) -> Result<String, String> {
        let token = request(Intent::new("mail.list").target(&folder).summary("look"))
            .map_err(|d| d.explain())?;
        let first = mail::list(&token, &folder)
            .map_err(|e| e.explain())?
            .into_iter()
            .next()
            .ok_or("empty folder")?;
        Self::read(first.id)
    }

    fn read_one(id: String) -> Result<String, String> {
        Self::read(id)
    }
}

impl Sweeper {
    fn read(id: String) -> Result<String, String> {
        let ids = [id];
        let token = request(Intent::new("mail.read").targets(&ids).summary("read it"))
            .map_err(|d| d.explain())?;
        Ok(mail::read(&token, &ids[0])
            .map_err(|e| e.explain())?
            .summary
            .subject)
    }
}

export!(Sweeper);
