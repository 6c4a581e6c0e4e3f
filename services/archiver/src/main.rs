//! `tern-archiver`: configuration → telemetry → [`tern_archiver::run`].

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tern_telemetry::exit_code(serve().await)
}

async fn serve() -> anyhow::Result<()> {
    let file = tern_config::config_file_from_args();
    let config: tern_archiver::Config = tern_config::load("archiver", file.as_deref())?;
    let _telemetry = tern_telemetry::init("tern-archiver");
    tern_archiver::run(config, tern_telemetry::shutdown_signal()).await
}
