//! The `agentcap` command (see [`agentcap::cli`]).

fn main() -> std::process::ExitCode {
    agentcap::cli::main()
}
