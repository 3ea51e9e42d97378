//! The daemon's command-line clients: `shoal add`, `list`, `pause`, `resume`, `remove`,
//! `config get|set|history|rollback`.
//!
//! Each reads the token from `<state-dir>/api-token` and calls the API at `--api`. Exit
//! codes: 2 for the caller's mistake (a malformed id, an unreadable .torrent, a request the
//! daemon answers 400); 1 when no daemon answers, the torrent does not exist (404), or the
//! daemon fails otherwise.
use crate::cli::bad_input;
use crate::cli::daemon::state_dir;
use anyhow::Context;
use clap::Args;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use shoal::daemon::{parse_id, state::token_path, TorrentView};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Where the daemon is and how to prove we may use it.
#[derive(Args, Debug)]
pub struct ApiArgs {
    /// The daemon's API address.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7070")]
    pub api: SocketAddr,
    /// The daemon's state directory, for its token (default as `shoal daemon`'s).
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct AddArgs {
    /// The .torrent file, or a magnet URI (its metadata is then fetched by the daemon).
    #[arg(value_name = "FILE|MAGNET")]
    pub file: String,
    /// Output directory: the data lands at `DIR/<name>`.
    #[arg(short = 'o', long = "output", value_name = "DIR")]
    pub output: PathBuf,
    /// Add it paused.
    #[arg(long)]
    pub paused: bool,
    /// A peer to connect to (repeatable), remembered with the torrent.
    #[arg(long = "peer", value_name = "IP:PORT")]
    pub peers: Vec<SocketAddr>,
    /// Download only these files (indices as `shoal info` lists them, e.g. 0,2-3); a
    /// magnet's `so=` otherwise.
    #[arg(long, value_name = "LIST")]
    pub only: Option<String>,
    #[command(flatten)]
    pub api: ApiArgs,
}

#[derive(Args, Debug)]
pub struct ListArgs {
    /// Print the daemon's JSON as it is.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub api: ApiArgs,
}

#[derive(Args, Debug)]
pub struct IdArgs {
    /// The torrent's info-hash in hex, as `shoal list` shows it.
    pub id: String,
    #[command(flatten)]
    pub api: ApiArgs,
}

#[derive(Args, Debug)]
pub struct RemoveArgs {
    /// The torrent's info-hash in hex, as `shoal list` shows it.
    pub id: String,
    /// Delete the torrent's data too (only `DIR/<name>` under its output directory).
    #[arg(long)]
    pub delete_data: bool,
    #[command(flatten)]
    pub api: ApiArgs,
}

/// One daemon, reached with its token.
struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Client {
    fn new(args: &ApiArgs) -> anyhow::Result<Client> {
        let dir = state_dir(args.state_dir.as_ref())?;
        let path = token_path(&dir);
        let token = std::fs::read_to_string(&path)
            .with_context(|| {
                format!("{}: no token (has `shoal daemon --state-dir {}` run?)", path.display(), dir.display())
            })?
            .trim()
            .to_string();
        let http = reqwest::Client::builder().timeout(Duration::from_secs(60)).build()?;
        Ok(Client { http, base: format!("http://{}", args.api), token })
    }

    /// Sends a request; the JSON answer on success, else an error with the daemon's message.
    async fn call(&self, method: Method, url: url::Url, body: Option<(&str, Vec<u8>)>) -> anyhow::Result<Value> {
        let mut req = self.http.request(method, url).bearer_auth(&self.token);
        if let Some((kind, bytes)) = body {
            req = req.header(reqwest::header::CONTENT_TYPE, kind).body(bytes);
        }
        let resp = req.send().await.map_err(|e| {
            let root = std::error::Error::source(&e).map(|s| format!(": {s}")).unwrap_or_default();
            anyhow::anyhow!("no daemon answering at {}{root} (start one with `shoal daemon`)", self.base)
        })?;
        let status = resp.status();
        let text = resp.text().await.context("reading the daemon's answer")?;
        let value: Value =
            if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::Null) };
        if status.is_success() {
            return Ok(value);
        }
        let msg = value.get("error").and_then(Value::as_str).map_or_else(|| text.clone(), str::to_string);
        let msg = format!("daemon: {msg} ({})", status.as_u16());
        Err(if status == StatusCode::BAD_REQUEST { bad_input(msg) } else { anyhow::anyhow!(msg) })
    }

    fn url(&self, path: &str) -> url::Url {
        url::Url::parse(&format!("{}{path}", self.base)).expect("an address and a path make a URL")
    }
}

pub async fn add(args: AddArgs) -> anyhow::Result<()> {
    let output =
        std::path::absolute(&args.output).map_err(|e| bad_input(format!("-o {}: {e}", args.output.display())))?;
    if let Some(list) = &args.only {
        shoal::metainfo::magnet::parse_select_only(list).map_err(|_| {
            bad_input(format!("--only: bad file list {list:?} (indices as `shoal info` lists them, e.g. 0,2-3)"))
        })?;
    }
    if args.file.to_ascii_lowercase().starts_with("magnet:") {
        return add_magnet(&args, &output).await;
    }
    let bytes = std::fs::read(&args.file).map_err(|e| bad_input(format!("{}: cannot read: {e}", args.file)))?;
    let client = Client::new(&args.api)?;
    let mut url = client.url("/api/torrents");
    {
        let mut q = url.query_pairs_mut();
        q.append_pair("output", &output.to_string_lossy());
        if args.paused {
            q.append_pair("paused", "true");
        }
        for p in &args.peers {
            q.append_pair("peer", &p.to_string());
        }
        if let Some(list) = &args.only {
            q.append_pair("only", list);
        }
    }
    let answer = client.call(Method::POST, url, Some(("application/x-bittorrent", bytes))).await?;
    println!("added {}", answer.get("id").and_then(Value::as_str).unwrap_or("?"));
    Ok(())
}

/// `shoal add MAGNET`: the daemon answers at once and fetches the metadata in the background.
async fn add_magnet(args: &AddArgs, output: &std::path::Path) -> anyhow::Result<()> {
    shoal::metainfo::Magnet::parse(&args.file).map_err(|e| bad_input(e.to_string()))?;
    let client = Client::new(&args.api)?;
    let mut body =
        serde_json::json!({ "magnet": args.file, "output": output, "paused": args.paused, "peers": args.peers });
    if let Some(list) = &args.only {
        body["only"] = Value::String(list.clone());
    }
    let bytes = serde_json::to_vec(&body).expect("JSON serializes");
    let answer = client.call(Method::POST, client.url("/api/torrents"), Some(("application/json", bytes))).await?;
    println!("added {} (fetching its metadata)", answer.get("id").and_then(Value::as_str).unwrap_or("?"));
    Ok(())
}

pub async fn list(args: ListArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.api)?;
    let answer = client.call(Method::GET, client.url("/api/torrents"), None).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
        return Ok(());
    }
    let torrents: Vec<TorrentView> = serde_json::from_value(answer).context("the daemon's torrent list")?;
    for t in torrents {
        let progress = t.progress.map_or_else(|| "    -".to_string(), |p| format!("{:5.1}%", p * 100.0));
        println!("{}  {:<11} {progress}  {:>3} peers  {}", t.id, t.state, t.peers, t.name);
    }
    Ok(())
}

/// `pause` or `resume` of one torrent.
pub async fn act(action: &str, args: IdArgs) -> anyhow::Result<()> {
    let id = parse_id(&args.id).map_err(|e| bad_input(e.to_string()))?;
    let client = Client::new(&args.api)?;
    client.call(Method::POST, client.url(&format!("/api/torrents/{id}/{action}")), None).await?;
    println!("{action}d {id}");
    Ok(())
}

pub async fn remove(args: RemoveArgs) -> anyhow::Result<()> {
    let id = parse_id(&args.id).map_err(|e| bad_input(e.to_string()))?;
    let client = Client::new(&args.api)?;
    let mut url = client.url(&format!("/api/torrents/{id}"));
    if args.delete_data {
        url.query_pairs_mut().append_pair("delete_data", "true");
    }
    client.call(Method::DELETE, url, None).await?;
    println!("removed {id}");
    Ok(())
}

#[derive(clap::Subcommand, Debug)]
pub enum ConfigAction {
    /// Print the current configuration (or one key of it) and its version.
    Get {
        key: Option<String>,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Change keys: `KEY=VALUE`..., VALUE as JSON when it parses so (`80`, `true`), else a
    /// string (`45s`). Applies to torrents added or resumed from now on.
    Set {
        #[arg(required = true, value_name = "KEY=VALUE")]
        pairs: Vec<String>,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// List the configuration's versions.
    History {
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Make version V current again (as a new version).
    Rollback {
        version: u32,
        #[command(flatten)]
        api: ApiArgs,
    },
}

pub async fn config(action: ConfigAction) -> anyhow::Result<()> {
    match action {
        ConfigAction::Get { key, api } => {
            let client = Client::new(&api)?;
            let answer = client.call(Method::GET, client.url("/api/config"), None).await?;
            match key {
                None => println!("{}", serde_json::to_string_pretty(&answer)?),
                Some(k) => match answer["options"].get(&k) {
                    Some(v) => println!("{v}"),
                    None => return Err(bad_input(format!("no config key `{k}`"))),
                },
            }
        }
        ConfigAction::Set { pairs, api } => {
            let mut patch = serde_json::Map::new();
            for pair in &pairs {
                let (k, v) = pair.split_once('=').ok_or_else(|| bad_input(format!("{pair:?}: write KEY=VALUE")))?;
                let value = serde_json::from_str(v).unwrap_or_else(|_| Value::String(v.to_string()));
                patch.insert(k.trim().to_string(), value);
            }
            let client = Client::new(&api)?;
            let body = serde_json::to_vec(&patch)?;
            let answer =
                client.call(Method::PATCH, client.url("/api/config"), Some(("application/json", body))).await?;
            println!("config version {}", answer["version"]);
        }
        ConfigAction::History { api } => {
            let client = Client::new(&api)?;
            let answer = client.call(Method::GET, client.url("/api/config/versions"), None).await?;
            for v in answer.as_array().into_iter().flatten() {
                println!("{}  {}  {}", v["version"], v["at"], v["note"].as_str().unwrap_or(""));
            }
        }
        ConfigAction::Rollback { version, api } => {
            let client = Client::new(&api)?;
            let body = serde_json::to_vec(&serde_json::json!({ "version": version }))?;
            let url = client.url("/api/config/rollback");
            let answer = client.call(Method::POST, url, Some(("application/json", body))).await?;
            println!("config version {} (= version {version})", answer["version"]);
        }
    }
    Ok(())
}
