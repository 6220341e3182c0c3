//! Links handed to another owner: a client such as Docker that moves an interface into its own
//! namespace itself. hns builds the link in a namespace of its own, then moves it to where the
//! client looks for it, and later finds it again (by MAC: the client renames it on the way).

use std::os::fd::{AsFd, AsRawFd};

use futures::TryStreamExt;
use netlink_packet_route::link::LinkAttribute;
use rtnetlink::LinkUnspec;

use crate::error::{KernelError, Result};
use crate::netlink::{LinkInfo, Netlink, link_info, nl_err};

impl Netlink {
    /// Takes the link `name` of this namespace down and moves it into the namespace `ns` under
    /// `new_name`, in one request (the kernel applies the name as part of the move, so the old
    /// name is never seen there). Its addresses and routes stay behind: the new owner sets its own.
    pub async fn move_link(&self, name: &str, new_name: &str, ns: &impl AsFd) -> Result<()> {
        let l = self.link_by_name(name).await?.ok_or_else(|| KernelError::new("move link", name, "no such link"))?;
        let msg = LinkUnspec::new_with_index(l.index).down().name(new_name.to_owned()).setns_by_fd(ns.as_fd().as_raw_fd()).build();
        self.handle.link().set(msg).execute().await.map_err(|e| nl_err("move link", &format!("{name} (as {new_name})"), e))
    }

    /// The link of this namespace with the MAC `mac`, skipping the names in `except` (links
    /// already claimed by someone else).
    pub async fn link_by_mac(&self, mac: [u8; 6], except: &[String]) -> Result<Option<LinkInfo>> {
        let _one_dump = self.dumps.lock().await;
        let mut stream = self.handle.link().get().execute();
        // Read to the end: a dump left half-read keeps the socket busy for the next one.
        let mut found = None;
        while let Some(m) = stream.try_next().await.map_err(|e| nl_err("list links", "", e))? {
            let has_mac = m.attributes.iter().any(|a| matches!(a, LinkAttribute::Address(b) if b.as_slice() == mac));
            if found.is_none() && has_mac {
                let l = link_info(&m);
                if !except.contains(&l.name) {
                    found = Some(l);
                }
            }
        }
        Ok(found)
    }
}
