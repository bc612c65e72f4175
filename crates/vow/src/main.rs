fn main() -> std::process::ExitCode {
    vow::cli::main()
}
