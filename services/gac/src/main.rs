//! `tern-gac`: configuration → telemetry → [`tern_gac::run`].

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tern_telemetry::exit_code(serve().await)
}

async fn serve() -> anyhow::Result<()> {
    let file = tern_config::config_file_from_args();
    let config: tern_gac::Config = tern_config::load("gac", file.as_deref())?;
    let _telemetry = tern_telemetry::init("tern-gac");
    tern_gac::run(config, tern_telemetry::shutdown_signal()).await
}
