//! The interactive chat of `inferno run`: line editing and history (rustyline), multi-line
//! input between `"""` lines, and slash commands.

use std::io::IsTerminal;

use rustyline::DefaultEditor;
use rustyline::error::ReadlineError;

use super::Session;

const HELP: &str = "\
/system <text>      set the system prompt (and clear the conversation)
/clear              forget the conversation
/set <name> <value> temperature, top_p, top_k, max_tokens or seed; /set alone shows them
/model [name]       show the model and the server's models, or switch
/stats              timings of the last answer
/help               this list
/bye                leave (or Ctrl-D)
Enter sends; \"\"\" on its own line starts and ends a multi-line message; Ctrl-C stops an answer.";

/// What one input line asks for.
#[derive(Debug, PartialEq)]
enum Input {
    Message(String),
    Command(String, String),
    Nothing,
}

fn parse(line: &str) -> Input {
    let trimmed = line.trim();
    if trimmed.is_empty() {
        return Input::Nothing;
    }
    match trimmed.strip_prefix('/') {
        Some(command) => {
            let (name, rest) = command
                .split_once(char::is_whitespace)
                .unwrap_or((command, ""));
            Input::Command(name.to_ascii_lowercase(), rest.trim().to_owned())
        }
        None => Input::Message(trimmed.to_owned()),
    }
}

/// Runs the chat until `/bye` or Ctrl-D.
pub(super) async fn run(session: &mut Session) -> anyhow::Result<()> {
    let mut editor = DefaultEditor::new()?;
    let history = crate::config::default_models_dir()
        .parent()
        .map(|dir| dir.join("history"));
    if let Some(path) = &history {
        let _ = editor.load_history(path);
    }
    let prompt = if std::io::stdout().is_terminal() && session.color {
        "\x1b[1m>>> \x1b[0m"
    } else {
        ">>> "
    };
    eprintln!(
        "Chatting with {}. /help for commands, /bye to leave.",
        session.model
    );
    loop {
        let line = match tokio::task::block_in_place(|| editor.readline(prompt)) {
            Ok(line) => line,
            Err(ReadlineError::Interrupted) => continue,
            Err(ReadlineError::Eof) => break,
            Err(err) => return Err(err.into()),
        };
        let line = if line.trim() == "\"\"\"" {
            let mut lines = Vec::new();
            loop {
                match tokio::task::block_in_place(|| editor.readline("... ")) {
                    Ok(more) if more.trim() == "\"\"\"" => break,
                    Ok(more) => lines.push(more),
                    Err(ReadlineError::Interrupted) => {
                        lines.clear();
                        break;
                    }
                    Err(ReadlineError::Eof) => break,
                    Err(err) => return Err(err.into()),
                }
            }
            lines.join("\n")
        } else {
            line
        };
        let _ = editor.add_history_entry(line.as_str());
        match parse(&line) {
            Input::Nothing => {}
            Input::Message(text) => {
                if let Err(err) = session.ask(&text).await {
                    session.note(&format!("error: {err:#}"));
                }
            }
            Input::Command(name, arg) => {
                if !command(session, &name, &arg).await {
                    break;
                }
            }
        }
    }
    if let Some(path) = &history {
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let _ = editor.save_history(path);
    }
    Ok(())
}

/// Runs a slash command; `false` means leave.
async fn command(session: &mut Session, name: &str, arg: &str) -> bool {
    match name {
        "bye" | "exit" | "quit" => return false,
        "help" | "?" => eprintln!("{HELP}"),
        "clear" => {
            session.messages.clear();
            session.note("conversation cleared");
        }
        "system" => {
            session.system = arg.to_owned();
            session.messages.clear();
            session.note("system prompt set; conversation cleared");
        }
        "set" if arg.is_empty() => eprintln!("{}", session.settings.describe()),
        "set" => {
            let (key, value) = arg.split_once(char::is_whitespace).unwrap_or((arg, ""));
            match session.settings.set(key, value.trim()) {
                Ok(()) => session.note(&format!("{key} = {}", value.trim())),
                Err(err) => session.note(&err),
            }
        }
        "model" if arg.is_empty() => {
            eprintln!("model: {}", session.model);
            match session.client.models().await {
                Ok(models) => eprintln!("available: {}", models.join(", ")),
                Err(err) => session.note(&format!("error: {err:#}")),
            }
        }
        "model" => {
            session.model = arg.to_owned();
            session.messages.clear();
            session.note(&format!("model: {arg}; conversation cleared"));
        }
        "stats" => match &session.last {
            Some(stats) => eprintln!("{stats}"),
            None => eprintln!("no answer yet"),
        },
        other => session.note(&format!("unknown command /{other}; /help lists them")),
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_messages_or_commands() {
        assert_eq!(
            parse("  hello there "),
            Input::Message("hello there".into())
        );
        assert_eq!(
            parse("/set temperature 0.5"),
            Input::Command("set".into(), "temperature 0.5".into())
        );
        assert_eq!(parse("/BYE"), Input::Command("bye".into(), String::new()));
        assert_eq!(parse("   "), Input::Nothing);
    }
}
