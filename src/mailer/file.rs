//! The file transport: one `.eml` per message in a folder.
//!
//! It is the out-of-the-box default so the daemon runs anywhere, and it is
//! what a dry run looks at. Each file is written under a temporary name and
//! renamed, so a reader never sees half a message.

use std::path::PathBuf;

use super::{Prepared, SendError};

pub(crate) struct FileTransport {
    dir: PathBuf,
}

impl FileTransport {
    pub(crate) fn new(dir: PathBuf) -> Self {
        FileTransport { dir }
    }

    pub(crate) async fn send(&self, p: &Prepared) -> Result<(), SendError> {
        let name = file_name(&p.message_id);
        let dir = self.dir.clone();
        let bytes = p.bytes.clone();
        let fail = |what: &str, e: std::io::Error| {
            SendError::Local(format!(
                "file transport {}: {what}: {e}",
                self.dir.display()
            ))
        };
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| fail("cannot create folder", e))?;
        let tmp = dir.join(format!(".{name}.tmp"));
        let dest = dir.join(format!("{name}.eml"));
        tokio::fs::write(&tmp, bytes)
            .await
            .map_err(|e| fail("cannot write", e))?;
        tokio::fs::rename(&tmp, &dest)
            .await
            .map_err(|e| fail("cannot rename", e))?;
        Ok(())
    }
}

/// The Message-ID made safe as a file name (it is ours, so normally it
/// already is).
fn file_name(message_id: &str) -> String {
    let name: String = message_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '@' | '.' | '-' | '_' | '+' | '=') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if name.is_empty() || name.starts_with('.') {
        format!("m{name}")
    } else {
        name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_stay_in_the_folder() {
        assert_eq!(file_name("abc@example.com"), "abc@example.com");
        assert_eq!(file_name("../../etc/passwd@x"), "m.._.._etc_passwd@x");
        assert!(!file_name("a/b@c").contains('/'));
    }
}
