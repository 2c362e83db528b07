//! Join a channel, print what others say, and publish each line typed on
//! stdin.
//!
//! ```sh
//! cargo run -p arqon-client --example chat -- ws://127.0.0.1:9100/ science explore ada
//! ```

#![allow(clippy::print_stdout)]

use std::env;

use arqon_client::{Client, ConnectOptions, SubscriptionEvent};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};

#[tokio::main]
async fn main() -> Result<(), arqon_client::ClientError> {
    let args: Vec<String> = env::args().skip(1).collect();
    let url = args.first().map_or("ws://127.0.0.1:9100/", String::as_str);
    let room = args.get(1).map_or("chat", String::as_str);
    let channel = args.get(2).map_or("general", String::as_str);
    let name = args.get(3).map_or("guest", String::as_str);

    let client = Client::connect(ConnectOptions::new(url).screen_name(name)).await?;
    let mut subscription = client.join_channel(room, channel).await?;
    println!(
        "joined {room}:{channel} as {} ({} here); type a line to send it",
        client
            .client_id()
            .map(|id| id.to_string())
            .unwrap_or_default(),
        subscription.joined().participant_count
    );

    let printer = tokio::spawn(async move {
        while let Some(event) = subscription.recv().await {
            match event {
                SubscriptionEvent::Message(message) => println!(
                    "[{}] {}: {}",
                    message.seq.unwrap_or_default(),
                    message.sender.unwrap_or_default(),
                    message.payload["text"].as_str().unwrap_or("")
                ),
                SubscriptionEvent::Gap(gap) => println!("-- reconnected: {gap:?}"),
                SubscriptionEvent::Removed { reason } => println!("-- {reason}"),
                SubscriptionEvent::Lagged(lag) => println!("-- {} message(s) dropped", lag.dropped),
                _ => {}
            }
        }
    });

    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if line.is_empty() {
            continue;
        }
        let ack = client
            .publish_with_ack(room, channel, json!({"text": line, "from": name}))
            .await?;
        println!(
            "-- sent as #{} to {}",
            ack.seq.unwrap_or_default(),
            ack.delivered
        );
    }
    client.close().await;
    let _ = printer.await;
    Ok(())
}
