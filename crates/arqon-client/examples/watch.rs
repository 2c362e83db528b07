//! Subscribe to one or more channels and print every message as JSON
//! lines, until Ctrl-C.
//!
//! ```sh
//! cargo run -p arqon-client --example watch -- ws://127.0.0.1:9100/ science:explore integriguard:telemetry-stream
//! ```

#![allow(clippy::print_stdout)]

use std::env;

use arqon_client::{ChannelKey, Client, ClientType, ConnectOptions, SubscriptionEvent};
use futures_util::StreamExt;
use futures_util::stream::select_all;
use serde_json::json;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = env::args().skip(1);
    let url = args.next().unwrap_or_else(|| "ws://127.0.0.1:9100/".into());
    let mut keys: Vec<ChannelKey> = args.map(|a| a.parse()).collect::<Result<_, _>>()?;
    if keys.is_empty() {
        keys.push("chat:general".parse()?);
    }

    let client = Client::connect(
        ConnectOptions::new(url)
            .client_type(ClientType::Dashboard)
            .screen_name("watch"),
    )
    .await?;
    let mut subscriptions = Vec::new();
    for key in &keys {
        subscriptions.push(client.join_channel(key.room(), key.channel()).await?);
    }
    eprintln!(
        "watching {} channel(s); Ctrl-C to stop",
        subscriptions.len()
    );

    let mut all = select_all(subscriptions);
    loop {
        tokio::select! {
            event = all.next() => match event {
                Some(SubscriptionEvent::Message(m)) => println!(
                    "{}",
                    json!({"channel": m.channel.as_str(), "seq": m.seq, "epoch": m.epoch,
                           "sender": m.sender, "type": m.kind.as_str(), "timestamp": m.timestamp,
                           "payload": m.payload, "replayed": m.replayed})
                ),
                Some(SubscriptionEvent::Gap(gap)) => eprintln!("gap after reconnect: {gap:?}"),
                Some(SubscriptionEvent::Removed { reason }) => eprintln!("{reason}"),
                Some(SubscriptionEvent::Lagged(lag)) => eprintln!("lagged: {lag:?}"),
                Some(_) => {}
                None => break,
            },
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    client.close().await;
    Ok(())
}
