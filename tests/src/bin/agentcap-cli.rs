//! The `agentcap` command line, built inside this package so that its tests
//! can run it (`CARGO_BIN_EXE_agentcap-cli`); identical to `agentcap`.

fn main() -> std::process::ExitCode {
    agentcap::cli::main()
}
