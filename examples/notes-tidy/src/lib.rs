//! notes-tidy: an example agentcap tool over the `files` capability.
//!
//! It reads the drafts of a notes folder, proposes one batch of moves
//! (drafts marked `status: done` go to `archive/`) and one batch of
//! deletions (drafts with nothing but a title), acts only on the subset the
//! person approves, and rewrites the folder's `index.md`, which the person
//! approves as a diff. Deletions go to the root's trash and can be restored
//! with `agentcap files restore`.

wit_bindgen::generate!({
    inline: r#"
        package example:notes-tidy;

        world notes-tidy {
            include agentcap:tools/files-tool@0.1.0;

            /// One draft and what the tool proposes for it.
            record proposal {
                path: string,
                /// `archive`, `delete` or `keep`.
                action: string,
                why: string,
            }

            /// What a tidy did.
            record tidy-report {
                scanned: u32,
                proposed: list<proposal>,
                /// The moves done (`from -> to`).
                moved: list<string>,
                /// Restore handles of the drafts moved to the trash.
                trashed: list<string>,
                /// Proposed paths the person did not approve (left alone).
                not-approved: list<string>,
                /// Whether `index.md` was rewritten.
                index-written: bool,
                /// The host's refusals, as worded by the host.
                refusals: list<string>,
            }

            /// Read the drafts under `root` (a root name) and say what a tidy
            /// would do; changes nothing.
            export survey: func(root: string) -> result<list<proposal>, string>;
            /// Propose, ask, and do what was approved.
            export tidy: func(root: string) -> result<tidy-report, string>;
        }
    "#,
    path: "../../tools-wit/wit",
    with: {
        "agentcap:tools/consent@0.1.0": agentcap_sdk::consent,
        "agentcap:tools/files@0.1.0": agentcap_sdk::files,
    },
});

use agentcap_sdk::{Explain, Intent, files, request};

struct NotesTidy;

fn list(folder: &str) -> Result<Vec<files::Entry>, String> {
    let token = request(
        Intent::new("files.list")
            .target(folder)
            .summary("see which notes there are"),
    )
    .map_err(|d| d.explain())?;
    files::list(&token, folder).map_err(|e| e.explain())
}

fn read(path: &str, size: u64) -> Result<String, String> {
    let token = request(
        Intent::new("files.read")
            .target(path)
            .summary("read a draft to see whether it is finished or empty"),
    )
    .map_err(|d| d.explain())?;
    let bytes = files::read(&token, path, 0, size).map_err(|e| e.explain())?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// What to do with a draft, from its content alone.
fn classify(content: &str) -> (&'static str, &'static str) {
    let lines: Vec<&str> = content
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    if lines.iter().any(|l| l.eq_ignore_ascii_case("status: done")) {
        ("archive", "marked `status: done`")
    } else if lines.iter().all(|l| l.starts_with('#')) {
        ("delete", "nothing but a title")
    } else {
        ("keep", "work in progress")
    }
}

fn survey_drafts(root: &str) -> Result<(u32, Vec<Proposal>), String> {
    let entries = list(&format!("{root}:drafts"))?;
    let mut proposals = Vec::new();
    let mut scanned = 0;
    for e in entries
        .iter()
        .filter(|e| !e.is_dir && e.path.ends_with(".md"))
    {
        scanned += 1;
        let content = read(&e.path, e.size)?;
        let (action, why) = classify(&content);
        proposals.push(Proposal {
            path: e.path.clone(),
            action: action.into(),
            why: why.into(),
        });
    }
    Ok((scanned, proposals))
}

fn archive_target(path: &str) -> String {
    let name = path.rsplit('/').next().unwrap_or(path);
    format!("{path} -> archive/{name}")
}

fn index(root: &str, drafts: &[String], archived: &[String]) -> String {
    let strip = |p: &String| p.strip_prefix(&format!("{root}:")).unwrap_or(p).to_string();
    let mut text = String::from("# Notes\n\n## Drafts\n");
    for d in drafts {
        text.push_str(&format!("- {}\n", strip(d)));
    }
    text.push_str("\n## Archive\n");
    for a in archived {
        text.push_str(&format!("- {}\n", strip(a)));
    }
    text
}

impl Guest for NotesTidy {
    fn survey(root: String) -> Result<Vec<Proposal>, String> {
        Ok(survey_drafts(&root)?.1)
    }

    fn tidy(root: String) -> Result<TidyReport, String> {
        let (scanned, proposed) = survey_drafts(&root)?;
        let mut report = TidyReport {
            scanned,
            proposed: proposed.clone(),
            moved: Vec::new(),
            trashed: Vec::new(),
            not_approved: Vec::new(),
            index_written: false,
            refusals: Vec::new(),
        };
        let moves: Vec<String> = proposed
            .iter()
            .filter(|p| p.action == "archive")
            .map(|p| archive_target(&p.path))
            .collect();
        let deletes: Vec<String> = proposed
            .iter()
            .filter(|p| p.action == "delete")
            .map(|p| p.path.clone())
            .collect();
        // One batch per kind of change; only the approved subset is done.
        if !moves.is_empty() {
            match request(
                Intent::new("files.move")
                    .targets(&moves)
                    .summary("archive the drafts marked done"),
            ) {
                Ok(token) => {
                    let approved = token.targets();
                    report
                        .not_approved
                        .extend(moves.iter().filter(|m| !approved.contains(m)).cloned());
                    match files::move_(&token, &approved) {
                        Ok(done) => report.moved = done,
                        Err(e) => report.refusals.push(e.explain()),
                    }
                }
                Err(d) => {
                    report.refusals.push(d.explain());
                    report.not_approved.extend(moves.iter().cloned());
                }
            }
        }
        if !deletes.is_empty() {
            match request(
                Intent::new("files.delete")
                    .targets(&deletes)
                    .summary("delete drafts that hold nothing but a title"),
            ) {
                Ok(token) => {
                    let approved = token.targets();
                    report
                        .not_approved
                        .extend(deletes.iter().filter(|d| !approved.contains(d)).cloned());
                    match files::delete(&token, &approved) {
                        Ok(handles) => report.trashed = handles,
                        Err(e) => report.refusals.push(e.explain()),
                    }
                }
                Err(d) => {
                    report.refusals.push(d.explain());
                    report.not_approved.extend(deletes.iter().cloned());
                }
            }
        }
        // The index lists what is there now.
        let mut drafts = Vec::new();
        let mut archived = Vec::new();
        for folder in ["drafts", "archive"] {
            let entries = list(&format!("{root}:{folder}")).unwrap_or_default();
            let names = entries.into_iter().filter(|e| !e.is_dir).map(|e| e.path);
            if folder == "drafts" {
                drafts.extend(names);
            } else {
                archived.extend(names);
            }
        }
        let index_path = format!("{root}:index.md");
        let content = index(&root, &drafts, &archived);
        match request(
            Intent::new("files.write")
                .target(&index_path)
                .payload(&content)
                .summary("update the index to match the folder"),
        ) {
            Ok(token) => match files::write(&token, &index_path, &content) {
                Ok(_) => report.index_written = true,
                Err(e) => report.refusals.push(e.explain()),
            },
            Err(d) => report.refusals.push(d.explain()),
        }
        Ok(report)
    }
}

export!(NotesTidy);
