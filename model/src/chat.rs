//! Chat prompts from the model's own template (`tokenizer.chat_template`, Jinja), rendered with
//! minijinja as Hugging Face's `apply_chat_template` does.

use minijinja::{Environment, Error, ErrorKind, context};

use crate::error::{ModelError, Result};

/// One message of a conversation.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Message {
    pub role: String,
    pub content: String,
}

/// Renders `messages` with `template`, ending with the assistant's turn opened.
///
/// The environment is Hugging Face's: blocks trim their newline and strip the whitespace before
/// them (`trim_blocks`, `lstrip_blocks`), Python's string methods work (`.startswith`, `.split`,
/// `.strip`, ...; minijinja-contrib's pycompat) and `raise_exception(message)` fails the render.
pub fn render(template: &str, messages: &[Message], bos: &str, eos: &str) -> Result<String> {
    let mut env = Environment::new();
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_function(
        "raise_exception",
        |message: String| -> std::result::Result<String, Error> {
            Err(Error::new(ErrorKind::InvalidOperation, message))
        },
    );
    env.add_template("chat", template)
        .map_err(|e| ModelError::Template(e.to_string()))?;
    env.get_template("chat")
        .and_then(|t| t.render(context! { messages => messages, add_generation_prompt => true, bos_token => bos, eos_token => eos }))
        .map_err(|e| ModelError::Template(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_chatml() {
        let template = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";
        let text = render(
            template,
            &[Message {
                role: "user".into(),
                content: "Hi".into(),
            }],
            "",
            "",
        )
        .unwrap();
        assert_eq!(
            text,
            "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
        assert!(matches!(
            render("{% for %}", &[], "", ""),
            Err(ModelError::Template(_))
        ));
    }
}
