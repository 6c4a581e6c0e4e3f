//! `tern-router`: configuration → telemetry → [`tern_router::run`].

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tern_telemetry::exit_code(serve().await)
}

async fn serve() -> anyhow::Result<()> {
    let file = tern_config::config_file_from_args();
    let config: tern_router::Config = tern_config::load("router", file.as_deref())?;
    let _telemetry = tern_telemetry::init("tern-router");
    tern_router::run(config, tern_telemetry::shutdown_signal()).await
}
