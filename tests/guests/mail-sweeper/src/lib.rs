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
}

export!(Sweeper);
