//! hnsctl: the command line of hns, with Docker's verbs for networks, endpoints, compartments
//! (network namespaces) and the processes that run in them.

mod client;
mod commands;
mod compartment;
mod error;
mod lbspec;
mod output;
mod portspec;
mod published;
mod rate;
mod runpolicy;
mod template;

use std::path::PathBuf;

use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};

use output::Format;

/// The `-p` forms, shared by the help of `run` and `port` (a macro so `concat!` can use it).
macro_rules! publish_forms {
    () => {
        "\
SPEC (docker's -p forms), each optionally followed by /tcp or /udp (default tcp):
  HOSTPORT:CPORT          8080:80             host port 8080 to container port 80
  CPORT                   80                  host port chosen by hnsd
  HOSTIP:HOSTPORT:CPORT   127.0.0.1:8080:80   only on that host address
  HOSTIP::CPORT           127.0.0.1::80       on that address, host port chosen
  H1-H2:C1-C2             8000-8002:80-82     one mapping per pair of ports
  H1-H2:CPORT             8000-8010:80        one host port chosen from 8000-8010
  C1-C2                   80-82               each container port, host ports chosen
  IPv6 host addresses go in brackets: [2001:db8::10]:8080:80, [2001:db8::10]::80 (an address of
  this host; ::1 cannot be mapped, as the kernel does not forward IPv6 loopback traffic).
Without a host address a mapping listens on every host address of each family the container
has: on a dual-stack network both 0.0.0.0:8080 and [::]:8080.
"
    };
}

const AFTER_HELP: &str = "\
Windows container cmdlets and their hnsctl equivalents:
  New-ContainerNetwork        hnsctl network create -d DRIVER ... NAME
  Get-ContainerNetwork        hnsctl network ls; hnsctl network inspect NAME
  Remove-ContainerNetwork     hnsctl network rm NAME
  Join-ContainerNetwork       hnsctl network connect NETWORK CONTAINER
  Leave-ContainerNetwork      hnsctl network disconnect NETWORK CONTAINER
  Add-NetNatStaticMapping     hnsctl port add CONTAINER HOSTPORT:CPORT (or run -p)
  Remove-NetNatStaticMapping  hnsctl port rm CONTAINER HOSTPORT:CPORT
  Get-NetNatStaticMapping     hnsctl port ls (or hnsctl port CONTAINER)

Get-ContainerNetwork fields as `network inspect` shows them (HNS v2 names):
  Name                -> Name
  Id                  -> ID
  Mode                -> Type
  SubnetPrefix        -> Ipams[].Subnets[].IpAddressPrefix
  Gateways            -> Ipams[].Subnets[].Routes[].NextHop (default route)
  NetworkAdapterName  -> InterfaceName (the Linux bridge or uplink)
  SourceMac           -> MacPool (and each endpoint's MacAddress)
  DNSServers          -> Dns.ServerList (network ls: DNS SERVERS)
  DNSSuffix           -> Dns.Domain (network ls: DNS SUFFIX)

Examples:
  hnsctl network create -d nat --subnet 172.30.0.0/16 mynat
  hnsctl run --net mynat --name web -d -- sleep 1000
  hnsctl exec web -- ip addr
  hnsctl port add web 8080:80
  hnsctl port web
  hnsctl ps
  hnsctl network ls --format '{{.Name}}\t{{.Subnet}}'
  hnsctl rm -f web
  hnsctl network rm mynat";

#[derive(Debug, Parser)]
#[command(
    name = "hnsctl",
    version,
    about = "Command line of hns, the Host Networking Service for Linux",
    long_about = "Command line of hns, the Host Networking Service for Linux.\n\n\
        hnsd gives containers the Windows container-networking model: networks made by the \
        nat, transparent, l2bridge, l2tunnel and overlay drivers; endpoints (vNICs) attached to \
        compartments, which are Linux network namespaces. hnsctl talks to hnsd over its unix \
        socket and starts processes inside compartments.",
    after_help = AFTER_HELP
)]
pub struct Cli {
    /// The unix socket hnsd listens on.
    #[arg(long, global = true, env = "HNS_SOCKET", default_value = "/run/hns/hns.sock", value_name = "PATH")]
    pub socket: PathBuf,

    /// Output format: table (aligned columns), json (the API objects), or, for the commands that
    /// list rows (ps, network ls, endpoint ls, namespace ls, port ls, node ls, lb ls, events), a template of
    /// the table's fields in docker's form: '{{.ID}}\t{{.Name}}' prints one line per row,
    /// 'table {{.Name}}\t{{.Subnet}}' aligned columns with headers. A field that does not exist
    /// is refused with the list of those that do.
    #[arg(long, global = true, value_parser = Format::parse, default_value = "table", value_name = "FORMAT")]
    pub format: Format,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Manage networks (New-/Get-/Remove-/Join-/Leave-ContainerNetwork).
    #[command(subcommand)]
    Network(NetworkCmd),
    /// Manage endpoints (a container's vNICs).
    #[command(subcommand)]
    Endpoint(EndpointCmd),
    /// Manage namespaces (compartments).
    #[command(subcommand, visible_alias = "ns")]
    Namespace(NamespaceCmd),
    /// Show a container's published ports (docker port); manage port mappings
    /// (Add-/Remove-/Get-NetNatStaticMapping, Open-ContainerPort).
    #[command(long_about = PORT_ABOUT, after_help = PORT_HELP, args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
    Port(PortCommand),
    /// Manage an endpoint's ACL policies (allow/block rules), shown in evaluation order.
    #[command(subcommand)]
    Policy(PolicyCmd),
    /// Manage load balancers: VIPs and ports spread over backend endpoints (what kube-proxy
    /// creates on Windows for each Service).
    #[command(subcommand, visible_alias = "loadbalancer", after_help = LB_HELP)]
    Lb(LbCmd),
    /// Show containers (namespaces), endpoints, networks or load balancers as JSON, whichever has
    /// the name.
    Inspect(InspectArgs),
    /// Run a command in a new compartment.
    Run(RunArgs),
    /// Run a command in an existing compartment.
    Exec(ExecArgs),
    /// List compartments that run a process.
    Ps(PsArgs),
    /// Remove compartments: their endpoints, then the namespace.
    Rm(RmArgs),
    /// Hosts of the overlay cluster: list them, remove a dead one's address reservations.
    #[command(subcommand)]
    Node(NodeCmd),
    /// Stream what hnsd does as it happens: creates, attaches, deletes, port mappings,
    /// reconcile repairs, DHCP leases, overlay nodes (docker events).
    #[command(long_about = EVENTS_ABOUT, after_help = EVENTS_HELP)]
    Events(EventsArgs),
    /// Show what hnsd knows about itself and the kernel.
    Info,
    /// Show the client version and the HNS API version of hnsd.
    Version,
    /// Print the manual page (roff), or write one per command to a directory.
    #[command(after_help = "Examples:\n  hnsctl man | man -l -\n  hnsctl man --dir /usr/local/share/man/man1      (hnsctl.1, hnsctl-network.1, ...)")]
    Man {
        /// Write hnsctl.1 and a page per subcommand (hnsctl-network.1, hnsctl-network-create.1,
        /// ...) to this directory instead of printing hnsctl.1.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Print a shell completion script.
    #[command(after_help = "Examples:\n  hnsctl completion bash > /etc/bash_completion.d/hnsctl\n  hnsctl completion zsh > \"${fpath[1]}/_hnsctl\"")]
    Completion {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

const EVENTS_ABOUT: &str = "\
Stream what hnsd does, one line per event, as it happens (like docker events): every create,
attach, detach, delete and modify of networks, endpoints and namespaces, port mappings added
and removed, reconcile repairs, DHCP leases obtained, renewed, lost and released, overlay nodes
joining and lost. Each line has the time (RFC 3339, UTC), the type, the action, the object's
ID, its name and network, other attributes, and the outcome: ok, or error with the message.
Requests hnsd refused are events too. Runs until interrupted (or --until).

--format json prints each event as the JSON object hnsd sends (GET /events); a template
'{{.Field}}' prints the fields given.";

const EVENTS_HELP: &str = "\
Filters (--filter KEY=VALUE; repeat a key for any of several values, different keys must all
match):
  type=TYPE         network, endpoint, namespace, portmapping, loadbalancer, reconcile, dhcp, node
  action=ACTION     create, delete, modify, attach, detach, add, remove, repair,
                    remove-orphan, collect, error, obtained, renewed, lost, released, join, loss
  network=NETWORK   name or ID: the network's own events and those of objects on it
  object=NAME       ID or name of the object
  outcome=ok|error

A subscriber that falls more than 1024 events behind loses the oldest, and is told how many
(type events, action missed).

Fields for --format: .Time .Type .Action .ID .Name .Network .Outcome .Error

Examples:
  hnsctl events
  hnsctl events --filter type=endpoint
  hnsctl events --filter network=mynat --filter type=portmapping
  hnsctl events --since 10m --until 0s                  (the last ten minutes, then exit)
  hnsctl events --format json
  hnsctl events --format '{{.Time}} {{.Type}} {{.Action}} {{.Name}}'";

#[derive(Debug, Args)]
pub struct EventsArgs {
    /// Only the events that match (KEY=VALUE, see below); repeatable.
    #[arg(short = 'f', long = "filter", value_name = "KEY=VALUE")]
    pub filter: Vec<String>,
    /// First show the events hnsd kept (its last 1024) from this time: RFC 3339
    /// (2026-12-05T13:00:00Z), Unix seconds, or a duration before now (10m).
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// Stop at this time (same forms; 0s: now).
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,
}

#[derive(Debug, Subcommand)]
#[command(after_help = "\
A host whose hnsd stopped renewing its lease is dropped by the others after the lease TTL
(hnsd --cluster-lease-ttl); its overlay addresses stay reserved until it comes back, or
until `hnsctl node rm` releases them.

Examples:
  hnsctl node ls
  hnsctl node rm host-c")]
pub enum NodeCmd {
    /// List the cluster's hosts: live ones and dead ones that still hold addresses.
    #[command(visible_alias = "list", after_help = "Fields for --format: .Name .Address .State .Endpoints .Addresses")]
    Ls(LsArgs),
    /// Remove dead hosts: release their overlay addresses (refused while a host is alive).
    #[command(visible_alias = "remove")]
    Rm {
        /// Node names.
        #[arg(required = true)]
        names: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum NetworkCmd {
    /// Create a network (New-ContainerNetwork).
    Create(NetworkCreateArgs),
    /// List networks (Get-ContainerNetwork).
    #[command(visible_alias = "list", after_help = "\
Fields for --format: .ID .Name .Driver .Subnet .Gateway .Internal .DNSServers .DNSSuffix

Examples:
  hnsctl network ls
  hnsctl network ls -q
  hnsctl network ls --format '{{.Name}}\\t{{.DNSServers}}'
  hnsctl network ls --format 'table {{.Name}}\\t{{.Subnet}}\\t{{.Internal}}'
  hnsctl --format json network ls")]
    Ls(LsArgs),
    /// Show networks as JSON (Get-ContainerNetwork).
    #[command(after_help = "Examples:\n  hnsctl network inspect mynat\n  hnsctl network inspect mynat 5a3d0f6e9c1b")]
    Inspect {
        /// Network names or IDs.
        #[arg(required = true, value_name = "NETWORK")]
        names: Vec<String>,
    },
    /// Remove networks (Remove-ContainerNetwork).
    #[command(visible_alias = "remove", after_help = "Examples:\n  hnsctl network rm mynat")]
    Rm {
        /// Network names or IDs.
        #[arg(required = true, value_name = "NETWORK")]
        names: Vec<String>,
    },
    /// Connect a compartment to a network (Join-ContainerNetwork).
    Connect(ConnectArgs),
    /// Disconnect a compartment from a network (Leave-ContainerNetwork).
    Disconnect(DisconnectArgs),
}

#[derive(Debug, Args)]
#[command(after_help = "\
Options (-o KEY=VALUE), KEY being com.docker.network.windowsshim.<name>:
  networkname=NAME   the network's name (instead of NAME)
  dnssuffix=SUFFIX   Dns.Domain
  dnsservers=A,B     Dns.ServerList
  interface=IFACE    the uplink (a NetAdapterName policy)
  vlanid=N           a VLAN policy on every subnet
  vsid=N             a VSID policy on every subnet (an overlay network's VNI, 4096 or more)

Dual stack: give two --subnet, an IPv4 one and an IPv6 one; each --gateway goes with the
--subnet at its position. Containers then get an address of each family (--ip, --ip6).

RULE (--acl): allow|block in|out [proto=P] [local=A] [remote=A] [local-ports=P]
[remote-ports=P] [priority=N] [type=switch|host] [id=ID]. The network's ACLs and each
endpoint's own are evaluated together; once there is any, what no rule allows is blocked.

Examples:
  hnsctl network create -d nat --subnet 172.30.0.0/16 mynat
  hnsctl network create -d nat --subnet 172.32.0.0/16 --subnet fd00:32::/64 ds
  hnsctl network create -d nat --subnet 172.31.0.0/16 --gateway 172.31.0.1 \\
      --ip-range 172.31.128.0/17 --aux-address router=172.31.0.2 --internal iso
  hnsctl network create -d l2bridge --subnet 10.10.0.0/24 --gateway 10.10.0.1 \\
      -o com.docker.network.windowsshim.interface=eth1 l2net
  hnsctl network create -d overlay --subnet 10.240.0.0/16 web      (hnsd --cluster-store ...)
  hnsctl network create --subnet 172.33.0.0/16 --acl 'allow in proto=tcp local-ports=80' \\
      --acl 'allow out' guarded")]
pub struct NetworkCreateArgs {
    /// Driver: nat, transparent, l2bridge, l2tunnel or overlay.
    #[arg(short = 'd', long, default_value = "nat")]
    pub driver: String,
    /// A subnet in CIDR form; repeat for more subnets (an IPv4 and an IPv6 one: dual stack).
    #[arg(long, value_name = "CIDR")]
    pub subnet: Vec<String>,
    /// The gateway of the subnet given at the same position.
    #[arg(long, value_name = "IP")]
    pub gateway: Vec<String>,
    /// Hand out addresses only from this range of the subnet that contains it.
    #[arg(long = "ip-range", value_name = "CIDR")]
    pub ip_range: Vec<String>,
    /// An address never handed out, in the subnet that contains it.
    #[arg(long = "aux-address", value_name = "NAME=IP")]
    pub aux_address: Vec<String>,
    /// No traffic leaves the network.
    #[arg(long)]
    pub internal: bool,
    /// Overlay networks: masquerade their traffic to the outside on every host (by default an
    /// overlay container reaches the outside through a second endpoint on a nat network).
    #[arg(long)]
    pub outbound_nat: bool,
    /// Driver option (see below).
    #[arg(short = 'o', long = "opt", value_name = "KEY=VALUE")]
    pub opt: Vec<String>,
    /// A NetworkACL: an ACL on every endpoint of the network, present and future, in the
    /// words of `hnsctl run --acl` (see below); repeat for more.
    #[arg(long = "acl", value_name = "RULE")]
    pub acl: Vec<String>,
    /// The network's name.
    pub name: String,
}

#[derive(Debug, Args)]
pub struct LsArgs {
    /// Print only IDs (full).
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  hnsctl network connect mynat web
  hnsctl network connect mynat web --ip 172.30.0.50 --alias db
  hnsctl network connect ds web --ip 172.32.0.50 --ip6 fd00:32::50
  hnsctl network connect mynat web --endpoint-name web-2      (a second endpoint on mynat)
  hnsctl network connect mynat --netns /run/netns/blue --name blue")]
pub struct ConnectArgs {
    /// Network name or ID.
    pub network: String,
    /// Compartment (namespace) name or ID.
    #[arg(required_unless_present = "netns", conflicts_with = "netns")]
    pub container: Option<String>,
    /// Connect this network namespace (e.g. /run/netns/x or /proc/PID/ns/net); hnsd adopts it
    /// as a compartment unless it already knows it.
    #[arg(long, value_name = "PATH")]
    pub netns: Option<PathBuf>,
    /// Name of the compartment adopted with --netns.
    #[arg(long, requires = "netns")]
    pub name: Option<String>,
    /// IPv4 address (optionally ADDR/LEN); default: the next free one.
    #[arg(long, value_name = "IP")]
    pub ip: Option<String>,
    /// IPv6 address, on a network with an IPv6 subnet (optionally ADDR/LEN); default: the next
    /// free one.
    #[arg(long, value_name = "IP")]
    pub ip6: Option<String>,
    /// MAC address, like 00-15-5D-01-02-03 or 00:15:5d:01:02:03.
    #[arg(long = "mac-address", visible_alias = "mac", value_name = "MAC")]
    pub mac_address: Option<String>,
    /// Name of the new endpoint (default: the compartment's name). Endpoint names are unique
    /// per network, so a second endpoint of a container on one network needs its own.
    #[arg(long = "endpoint-name", value_name = "NAME")]
    pub endpoint_name: Option<String>,
    /// Extra DNS name on the network; repeat for more.
    #[arg(long, value_name = "NAME")]
    pub alias: Vec<String>,
}

#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  hnsctl network disconnect mynat web
  hnsctl network disconnect mynat --netns /run/netns/blue")]
pub struct DisconnectArgs {
    /// Network name or ID.
    pub network: String,
    /// Compartment (namespace) name or ID.
    #[arg(required_unless_present = "netns", conflicts_with = "netns")]
    pub container: Option<String>,
    /// The compartment whose network namespace is this path.
    #[arg(long, value_name = "PATH")]
    pub netns: Option<PathBuf>,
}

const PORT_ABOUT: &str = "\
Show the ports a container publishes, as docker port does, or manage port mappings: a host port
(on every host address, or on one) forwarded to a port of a container, as WinNAT static
mappings do on Windows. Each mapping is a PortMapping policy of the container's endpoint.

  hnsctl port CONTAINER                 each mapping: 80/tcp -> 0.0.0.0:8080
  hnsctl port CONTAINER PORT[/PROTO]    the host sides of one container port: 0.0.0.0:8080
  hnsctl port ls|add|rm ...             the subcommands below

A first word that is a subcommand (ls, list, add, rm, remove) is that subcommand; for a
container with one of these names write `hnsctl port -- NAME`.

Windows equivalents:
  Add-NetNatStaticMapping, Open-ContainerPort   hnsctl port add CONTAINER SPEC...
  Remove-NetNatStaticMapping                    hnsctl port rm CONTAINER SPEC...
  Get-NetNatStaticMapping                       hnsctl port ls [CONTAINER]";

const PORT_HELP: &str = concat!(
    publish_forms!(),
    "
Examples:
  hnsctl run --net mynat --name web -d -p 8080:80 -- python3 -m http.server 80
  hnsctl port web
  hnsctl port web 80/tcp
  hnsctl port ls
  hnsctl port add web 9090:90 53/udp
  hnsctl port rm web 9090:90"
);

/// `hnsctl port`: a subcommand, or a container whose ports to show.
#[derive(Debug, Args)]
pub struct PortCommand {
    #[command(subcommand)]
    pub cmd: Option<PortCmd>,
    #[command(flatten)]
    pub show: PortShowArgs,
}

#[derive(Debug, Args)]
pub struct PortShowArgs {
    /// Container (namespace) name or ID, or endpoint name or ID, whose published ports to show.
    #[arg(required = true)]
    pub container: Option<String>,
    /// Only this container port (tcp unless /udp is given): print the host addresses and ports
    /// it is published on.
    #[arg(value_name = "PRIVATE_PORT[/PROTO]")]
    pub private_port: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum PortCmd {
    /// List port mappings (Get-NetNatStaticMapping).
    #[command(
        visible_alias = "list",
        after_help = "\
ID is the endpoint's short ID, the protocol and the host side of the mapping.

Fields for --format: .ID .Container .Protocol .ExternalIP .ExternalPort .InternalIP
.InternalPort .RemotePrefix .Active

Examples:
  hnsctl port ls
  hnsctl port ls web
  hnsctl port ls --format '{{.Container}}\\t{{.ExternalPort}}'
  hnsctl --format json port ls web"
    )]
    Ls(PortLsArgs),
    /// Add port mappings to a container (Add-NetNatStaticMapping, Open-ContainerPort).
    #[command(after_help = concat!(
        "Prints each mapping made, with the host port hnsd chose: 80/tcp -> 0.0.0.0:49153 (and\n\
         80/tcp -> [::]:49153 on a dual-stack network).\n\n",
        publish_forms!(),
        "
Examples:
  hnsctl port add web 8080:80
  hnsctl port add web 80 443 53/udp
  hnsctl port add web 127.0.0.1:8000-8010:80 --net mynat"
    ))]
    Add(PortArgs),
    /// Remove port mappings from a container (Remove-NetNatStaticMapping).
    #[command(
        visible_alias = "remove",
        after_help = "\
A mapping is found by its protocol, host port and host address; the container port of the
spec is not compared. Prints each mapping removed: removed 80/tcp -> 0.0.0.0:8080.

Examples:
  hnsctl port rm web 8080:80
  hnsctl port rm web 127.0.0.1:8080:80 5353:53/udp
  hnsctl port rm web 8000-8002:80-82 --net mynat"
    )]
    Rm(PortArgs),
}

#[derive(Debug, Args)]
pub struct PortLsArgs {
    /// Only the mappings of this container (namespace name or ID) or endpoint (name or ID).
    pub container: Option<String>,
}

#[derive(Debug, Args)]
pub struct PortArgs {
    /// Container (namespace) name or ID, or endpoint name or ID.
    pub container: String,
    /// Port mappings, in `run -p` form (see below).
    #[arg(required = true, value_name = "SPEC")]
    pub specs: Vec<String>,
    /// The network of the endpoint to change, when the container has several.
    #[arg(long = "net", visible_alias = "network", value_name = "NETWORK")]
    pub net: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum PolicyCmd {
    /// List an endpoint's ACLs in evaluation order (ascending priority, Block first at ties).
    #[command(visible_alias = "list", after_help = "Examples:\n  hnsctl policy ls web")]
    Ls(PolicyLsArgs),
    /// Add an ACL to an endpoint.
    #[command(after_help = "\
Once an endpoint has any ACL, what no rule allows is blocked.

--rule RULE gives the rule in words, the form `hnsctl run --acl` takes:
  allow|block in|out [proto=P] [local=A] [remote=A] [local-ports=P] [remote-ports=P]
  [priority=N] [type=switch|host] [id=ID]
each key being the flag of the same name.

Examples:
  hnsctl policy add web --allow --in --proto tcp --local-ports 80,8000-8080 --remote 10.0.0.0/8 --priority 200
  hnsctl policy add web --rule 'allow in proto=tcp local-ports=80,8000-8080 remote=10.0.0.0/8 priority=200'
  hnsctl policy add web --allow --out --priority 65500
  hnsctl policy add web --block --in --proto icmp --type host --priority 100")]
    Add(PolicyArgs),
    /// Remove an ACL from an endpoint: the one with --id, or the one equal to the flags.
    #[command(visible_alias = "remove", after_help = "Examples:\n  hnsctl policy rm web --allow --in --id web-80")]
    Rm(PolicyArgs),
}

#[derive(Debug, Args)]
pub struct PolicyLsArgs {
    /// Endpoint name or ID.
    pub endpoint: String,
}

#[derive(Debug, Args)]
pub struct PolicyArgs {
    /// Endpoint name or ID.
    pub endpoint: String,
    /// The whole rule in words, as `run --acl` takes it (instead of the flags below).
    #[arg(long, value_name = "RULE", conflicts_with_all = ["allow", "block", "inbound", "outbound", "proto", "local", "remote", "local_ports", "remote_ports", "priority", "kind", "id"])]
    pub rule: Option<String>,
    /// Allow what the rule matches.
    #[arg(long, conflicts_with = "block")]
    pub allow: bool,
    /// Block what the rule matches.
    #[arg(long)]
    pub block: bool,
    /// Traffic the endpoint receives.
    #[arg(long = "in", conflicts_with = "outbound")]
    pub inbound: bool,
    /// Traffic the endpoint sends.
    #[arg(long = "out")]
    pub outbound: bool,
    /// Protocols: numbers or tcp, udp, icmp, icmpv6, comma-separated; default any.
    #[arg(long, value_name = "PROTOS")]
    pub proto: Option<String>,
    /// The endpoint's addresses or prefixes the rule is about.
    #[arg(long, value_name = "ADDRS")]
    pub local: Option<String>,
    /// The other side's addresses or prefixes.
    #[arg(long, value_name = "ADDRS")]
    pub remote: Option<String>,
    /// The endpoint's ports and ranges (tcp/udp only).
    #[arg(long, value_name = "PORTS")]
    pub local_ports: Option<String>,
    /// The other side's ports and ranges (tcp/udp only).
    #[arg(long, value_name = "PORTS")]
    pub remote_ports: Option<String>,
    /// Lower numbers are evaluated first (0-65535, default 0).
    #[arg(long)]
    pub priority: Option<u16>,
    /// switch (every packet, the default) or host (traffic with the host itself).
    #[arg(long = "type", value_name = "TYPE", value_parser = ["switch", "host"])]
    pub kind: Option<String>,
    /// The rule's Id.
    #[arg(long)]
    pub id: Option<String>,
}

const LB_HELP: &str = "\
A load balancer has no name: hnsctl refers to it by its ID or a unique start of it (the ID
column of `hnsctl lb ls`). Backends are endpoints, given by endpoint name, endpoint ID (or a
unique start of it), or container name: the container's endpoint (with --net when it has
several).

Windows equivalents (hns.v2.psm1 functions; hcsshim's hcn package as kube-proxy uses it):
  New-HnsLoadBalancer, hcn Create                  hnsctl lb create
  Get-HnsLoadBalancer, hcn ListLoadBalancers       hnsctl lb ls, hnsctl lb inspect LB
  Remove-HnsLoadBalancer, hcn Delete               hnsctl lb rm LB
  hcn Update (the whole object, new backends)      hnsctl lb add-backend / rm-backend

Examples:
  hnsctl lb create --vip 10.96.0.10 --port tcp/80:8080 --backend web1 --backend web2
  hnsctl lb ls
  hnsctl lb add-backend 5a3d0f6e web3
  hnsctl lb rm-backend 5a3d0f6e web1
  hnsctl lb rm 5a3d0f6e";

const LB_CREATE_HELP: &str = "\
--port [PROTO/]EXTERNAL[:INTERNAL]: clients connect to EXTERNAL on each VIP; the connection
goes to INTERNAL (default: EXTERNAL) on one backend. PROTO is tcp (default) or udp. Repeat
--port for more ports; --internal, --local-routed and --affinity apply to each of them.

Without --vip the load balancer answers on every address of the host (a node port); with
--vip, on those addresses only (the LAN must route them to this host). The family of the
VIPs is the load balancer's (--ipv6 is needed only without --vip). Prints the new ID.

--dsr and --preserve-dip deliver the packet still addressed to the VIP (no port translation,
so EXTERNAL and INTERNAL must be equal); with --dsr the backend answers the client directly. A
backend then owns the VIP itself: ip addr add VIP/32 dev lo, arp_ignore=1, arp_announce=2.

A backend may be an overlay endpoint of another host; then --source-vip is required and must be
the address of an endpoint of this host on that overlay network without a compartment: the
backend's replies come back to it (see Remote backends in docs/policies.md).

Examples:
  hnsctl lb create --vip 10.96.0.10 --port tcp/80:8080 --backend web1 --backend web2
  hnsctl lb create --vip 10.96.0.53 --port udp/53 --port tcp/53 --backend dns --affinity source
  hnsctl lb create --port tcp/30080:80 --backend web1              (node port: every host address)
  hnsctl lb create --vip 10.96.0.11 --port 443:8443 --internal --backend api --net backend
  hnsctl lb create --ipv6 --vip fd00:96::10 --port tcp/80 --backend web6
  hnsctl lb create --vip 10.96.0.12 --port tcp/80 --dsr --backend web1 --backend web2
  hnsctl lb create --vip 10.96.0.50 --port 80:7000 --backend web-b --source-vip 10.240.0.250";

#[derive(Debug, Subcommand)]
pub enum LbCmd {
    /// Create a load balancer; prints its ID.
    #[command(after_help = LB_CREATE_HELP)]
    Create(LbCreateArgs),
    /// List load balancers.
    #[command(visible_alias = "list", after_help = "\
VIPS * means every address of the host. PORTS are PROTO/EXTERNAL:INTERNAL. BACKENDS are
endpoint names (short IDs for endpoints without a name). FLAGS: internal, local-routed,
use-mux, preserve-dip, affinity=source|source-proto (with the port when the ports differ),
ipv6, dsr, source-vip=IP.

Fields for --format: .ID .VIPs .Ports .Backends .Flags

Examples:
  hnsctl lb ls
  hnsctl lb ls -q
  hnsctl lb ls --format '{{.ID}}\\t{{.Backends}}'
  hnsctl --format json lb ls")]
    Ls(LsArgs),
    /// Show load balancers as JSON (HostComputeLoadBalancer).
    #[command(after_help = "Examples:\n  hnsctl lb inspect 5a3d0f6e9c1b")]
    Inspect {
        /// Load balancer IDs (or unique starts of them).
        #[arg(required = true, value_name = "LB")]
        names: Vec<String>,
    },
    /// Remove load balancers.
    #[command(visible_alias = "remove", after_help = "Examples:\n  hnsctl lb rm 5a3d0f6e9c1b")]
    Rm {
        /// Load balancer IDs (or unique starts of them).
        #[arg(required = true, value_name = "LB")]
        names: Vec<String>,
    },
    /// Add backends to a load balancer.
    #[command(after_help = "Examples:\n  hnsctl lb add-backend 5a3d0f6e web3 web4\n  hnsctl lb add-backend 5a3d0f6e app --net backend")]
    AddBackend(LbBackendArgs),
    /// Remove backends from a load balancer; their tracked connections are cleared.
    #[command(visible_alias = "remove-backend", after_help = "Examples:\n  hnsctl lb rm-backend 5a3d0f6e web1")]
    RmBackend(LbBackendArgs),
}

#[derive(Debug, Args)]
pub struct LbCreateArgs {
    /// A frontend address; repeat for more (none: every address of the host).
    #[arg(long, value_name = "IP")]
    pub vip: Vec<String>,
    /// A frontend port and the backends' port (see below); repeat for more.
    #[arg(long, required = true, value_name = "[PROTO/]EXTERNAL[:INTERNAL]")]
    pub port: Vec<String>,
    /// A backend: endpoint name or ID, or container name; repeat for more.
    #[arg(long, value_name = "ENDPOINT")]
    pub backend: Vec<String>,
    /// none: any backend per connection; source: one backend per client address;
    /// source-proto: one per client address and protocol.
    #[arg(long, value_enum, default_value_t = lbspec::Affinity::None, value_name = "AFFINITY")]
    pub affinity: lbspec::Affinity,
    /// Reachable only from containers on hns networks (ILB), not from the LAN.
    #[arg(long)]
    pub internal: bool,
    /// The VIP is reachable from the host itself (LocalRoutedVIP).
    #[arg(long)]
    pub local_routed: bool,
    /// The source address a backend sees when its own connection to the VIP comes back to it;
    /// with remote (overlay) backends, the address their connections come from.
    #[arg(long, value_name = "IP")]
    pub source_vip: Option<String>,
    /// Direct Server Return (EnableDirectServerReturn): the backend gets the packet addressed
    /// to the VIP and answers the client directly.
    #[arg(long)]
    pub dsr: bool,
    /// Deliver to the backend with the VIP as destination (PreserveDIP), replies through the host.
    #[arg(long)]
    pub preserve_dip: bool,
    /// An IPv6 load balancer (implied by IPv6 VIPs).
    #[arg(long)]
    pub ipv6: bool,
    /// The network of the backend endpoint of a container that has several.
    #[arg(long = "net", visible_alias = "network", value_name = "NETWORK")]
    pub net: Option<String>,
    /// The load balancer's ID (a GUID; default: chosen by hnsd).
    #[arg(long, value_name = "GUID")]
    pub id: Option<String>,
}

#[derive(Debug, Args)]
pub struct LbBackendArgs {
    /// Load balancer ID (or a unique start of it).
    pub lb: String,
    /// Endpoint names or IDs, or container names.
    #[arg(required = true, value_name = "ENDPOINT")]
    pub endpoints: Vec<String>,
    /// The network of the endpoint of a container that has several.
    #[arg(long = "net", visible_alias = "network", value_name = "NETWORK")]
    pub net: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum EndpointCmd {
    /// Create an endpoint without attaching it (attach with `hnsctl network connect` or the API);
    /// prints its ID.
    #[command(after_help = "\
Addresses come from the network's pool unless --ip names them; on an overlay network the
address is reserved cluster-wide. An endpoint without a compartment is what a load balancer's
SourceVIP for remote backends needs (see Remote backends in docs/policies.md).

Examples:
  hnsctl endpoint create --net nat --name web
  hnsctl endpoint create --net ov --ip 10.240.0.250 --name lb-source")]
    Create {
        /// The network (name or ID).
        #[arg(long = "net", visible_alias = "network", value_name = "NETWORK")]
        net: String,
        /// A static address; repeat for one of each family.
        #[arg(long, value_name = "IP")]
        ip: Vec<String>,
        /// A static MAC address (default: chosen by hnsd).
        #[arg(long, value_name = "MAC")]
        mac: Option<String>,
        /// The endpoint's name.
        #[arg(long)]
        name: Option<String>,
    },
    /// List endpoints.
    #[command(visible_alias = "list", after_help = "\
Fields for --format: .ID .Name .Network .IPAddress .MacAddress .Namespace .State

Examples:
  hnsctl endpoint ls
  hnsctl --format json endpoint ls")]
    Ls(LsArgs),
    /// Show endpoints as JSON.
    #[command(after_help = "Examples:\n  hnsctl endpoint inspect web")]
    Inspect {
        /// Endpoint names or IDs.
        #[arg(required = true, value_name = "ENDPOINT")]
        names: Vec<String>,
    },
    /// Remove endpoints (detaching them first).
    #[command(visible_alias = "remove", after_help = "Examples:\n  hnsctl endpoint rm 0b1c2d3e4f50")]
    Rm {
        /// Endpoint names or IDs.
        #[arg(required = true, value_name = "ENDPOINT")]
        names: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum NamespaceCmd {
    /// Create a compartment (or adopt an existing network namespace with --netns).
    #[command(after_help = "Examples:\n  hnsctl namespace create --name blue\n  hnsctl namespace create --name red --netns /run/netns/red")]
    Create {
        /// Name of the compartment.
        #[arg(long)]
        name: Option<String>,
        /// Adopt this network namespace instead of creating one.
        #[arg(long, value_name = "PATH")]
        netns: Option<PathBuf>,
    },
    /// List compartments.
    #[command(visible_alias = "list", after_help = "\
Fields for --format: .ID .Name .NetNs .Endpoints .PID

Examples:
  hnsctl namespace ls")]
    Ls(LsArgs),
    /// Show compartments as JSON.
    #[command(after_help = "Examples:\n  hnsctl namespace inspect web")]
    Inspect {
        /// Namespace names or IDs.
        #[arg(required = true, value_name = "NAMESPACE")]
        names: Vec<String>,
    },
    /// Remove compartments; hnsd detaches their endpoints first (the endpoints remain; `hnsctl rm` removes them too).
    #[command(visible_alias = "remove", after_help = "Examples:\n  hnsctl namespace rm blue")]
    Rm {
        /// Namespace names or IDs.
        #[arg(required = true, value_name = "NAMESPACE")]
        names: Vec<String>,
    },
}

#[derive(Debug, Args)]
#[command(after_help = concat!("\
--net host: the command shares hnsctl's network namespace (no compartment).
--net none: a compartment with only a loopback interface.

-p prints the mappings made, with the host ports hnsd chose (80/tcp -> 0.0.0.0:49153, and
80/tcp -> [::]:49153 on a dual-stack network), on stderr: with -d, stdout carries the ID only,
so ID=$(hnsctl run -d ...) works. `hnsctl port NAME` shows them again.

", publish_forms!(), "
RULE (--acl), the words of `hnsctl policy add --rule`, each key the flag of the same name:
  allow|block in|out [proto=P] [local=A] [remote=A] [local-ports=P] [remote-ports=P]
  [priority=N] [type=switch|host] [id=ID]
  Lower priorities are evaluated first; at equal priority block wins.

--outbound-nat gives an IPv4 OutBoundNAT policy (and an IPv6 one, Flags 2, when an IPv6
exception is given); on nat networks, which are masqueraded anyway, its exceptions skip the
masquerade. Not on transparent or l2tunnel networks.

Examples:
  hnsctl run --net mynat --name web -d -- sleep 1000
  hnsctl run --net mynat --name api -d --acl 'allow in proto=tcp local-ports=80 priority=100' -- sleep 1000
  hnsctl run --net L2 -d --outbound-nat-exception 10.244.0.0/16 --outbound-nat-exception 10.96.0.0/12 -- sleep 1000
  hnsctl run --net mynat --name web -d -p 8080:80 -p 53/udp -- python3 -m http.server 80
  hnsctl run --rm -- ip addr
  hnsctl run --net mynat --ip 172.30.0.10 --alias api -- python3 -m http.server
  hnsctl run --net ds --ip 172.32.0.10 --ip6 fd00:32::10 --mac 00-15-5D-00-00-10 -d -- sleep 1000
  hnsctl run --net none --rm ping -c1 127.0.0.1"))]
pub struct RunArgs {
    /// Network to connect to, or `host`, or `none`.
    #[arg(long = "net", visible_alias = "network", default_value = "nat", value_name = "NETWORK")]
    pub net: String,
    /// Name of the compartment (default: a generated one).
    #[arg(long)]
    pub name: Option<String>,
    /// IPv4 address on the network (optionally ADDR/LEN).
    #[arg(long, value_name = "IP")]
    pub ip: Option<String>,
    /// IPv6 address on the network, which needs an IPv6 subnet (optionally ADDR/LEN).
    #[arg(long, value_name = "IP")]
    pub ip6: Option<String>,
    /// MAC address of the endpoint, like 00-15-5D-01-02-03 or 00:15:5d:01:02:03.
    #[arg(long = "mac-address", visible_alias = "mac", value_name = "MAC")]
    pub mac_address: Option<String>,
    /// Extra DNS name on the network; repeat for more.
    #[arg(long, value_name = "NAME")]
    pub alias: Vec<String>,
    /// Publish a container port on the host (see SPEC below); repeat for more.
    #[arg(short = 'p', long = "publish", value_name = "SPEC")]
    pub publish: Vec<String>,
    /// Cap what the container sends (a QOS policy, enforced on the host side): 10mbit,
    /// 500kbit, 2MB, or bytes per second; decimal units.
    #[arg(long = "max-bandwidth", value_name = "RATE")]
    pub max_bandwidth: Option<String>,
    /// An ACL on the endpoint, in words (see RULE below); repeat for more. Once an endpoint has
    /// any ACL, what no rule allows is blocked.
    #[arg(long = "acl", value_name = "RULE")]
    pub acl: Vec<String>,
    /// Source-NAT what the container sends out of the host to the host's address (an
    /// OutBoundNAT policy); =LIST: comma-separated destinations that keep the container's
    /// address.
    #[arg(long = "outbound-nat", value_name = "EXCEPTIONS", num_args = 0..=1, require_equals = true, default_missing_value = "")]
    pub outbound_nat: Option<String>,
    /// A destination address or prefix that keeps the container's address (implies
    /// --outbound-nat); repeat for more.
    #[arg(long = "outbound-nat-exception", value_name = "PREFIX")]
    pub outbound_nat_exception: Vec<String>,
    /// Run in the background and print the compartment's ID.
    #[arg(short = 'd', long)]
    pub detach: bool,
    /// Remove the endpoints and the compartment when the command exits.
    #[arg(long)]
    pub rm: bool,
    #[command(flatten)]
    pub program: ProgramArgs,
}

/// The program `run` and `exec` start, and Docker's `-i`/`-t`, accepted as no-ops.
#[derive(Debug, Args)]
pub struct ProgramArgs {
    /// Accepted for Docker habits; the command always shares hnsctl's terminal.
    #[arg(short = 'i', long, hide = true)]
    pub interactive: bool,
    /// Accepted for Docker habits; the command always shares hnsctl's terminal.
    #[arg(short = 't', long, hide = true)]
    pub tty: bool,
    /// The command and its arguments.
    #[arg(required = true, trailing_var_arg = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  hnsctl exec web -- ip addr
  hnsctl exec web cat /etc/resolv.conf")]
pub struct ExecArgs {
    /// Compartment (namespace) name or ID.
    pub container: String,
    #[command(flatten)]
    pub program: ProgramArgs,
}

#[derive(Debug, Args)]
#[command(after_help = "\
Without -a only running containers are listed, as docker ps does. PORTS shows each published
port as host->container: 0.0.0.0:8080->80/tcp, [::]:8080->80/tcp.

Fields for --format: .ID .Names .Command .Status .PID .Ports .Networks .IPAddress

Examples:
  hnsctl ps
  hnsctl ps -a
  hnsctl ps --format '{{.Names}}\\t{{.Ports}}'")]
pub struct PsArgs {
    /// Show every compartment: also those with no process yet (created) and those whose
    /// process ended (exited).
    #[arg(short, long)]
    pub all: bool,
    /// Print only IDs (full).
    #[arg(short, long)]
    pub quiet: bool,
    /// Do not shorten the command.
    #[arg(long)]
    pub no_trunc: bool,
}

#[derive(Debug, Args)]
#[command(after_help = "\
Each NAME is looked up as a container (namespace), then as an endpoint, then as a network,
then as a load balancer (by ID or a unique start of it: they have no name); --type looks up
one kind only. Prints one JSON array, like docker inspect.

Examples:
  hnsctl inspect web
  hnsctl inspect --type network nat
  hnsctl inspect --type lb 5a3d0f6e")]
pub struct InspectArgs {
    /// Only this kind of object.
    #[arg(long = "type", value_enum, value_name = "KIND")]
    pub kind: Option<ObjectKind>,
    /// Names or IDs.
    #[arg(required = true, value_name = "NAME")]
    pub names: Vec<String>,
}

/// The kinds of object `inspect --type` takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ObjectKind {
    /// A compartment (namespace).
    #[value(alias = "namespace")]
    Container,
    Endpoint,
    Network,
    /// A load balancer.
    #[value(name = "lb", alias = "loadbalancer")]
    LoadBalancer,
}

#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  hnsctl rm web\n  hnsctl rm -f web db")]
pub struct RmArgs {
    /// Kill the recorded process (SIGKILL) if it still runs.
    #[arg(short, long)]
    pub force: bool,
    /// Compartment names or IDs.
    #[arg(required = true, value_name = "CONTAINER")]
    pub names: Vec<String>,
}

/// True for the commands that print rows, which `--format TEMPLATE` applies to.
fn lists_rows(command: &Command) -> bool {
    matches!(
        command,
        Command::Ps(_)
            | Command::Network(NetworkCmd::Ls(_))
            | Command::Endpoint(EndpointCmd::Ls(_))
            | Command::Namespace(NamespaceCmd::Ls(_))
            | Command::Node(NodeCmd::Ls(_))
            | Command::Port(PortCommand { cmd: Some(PortCmd::Ls(_)), .. })
            | Command::Lb(LbCmd::Ls(_))
            | Command::Events(_)
    )
}

fn dispatch(cli: Cli) -> error::Result<i32> {
    if matches!(cli.format, Format::Template(_)) && !lists_rows(&cli.command) {
        return Err(error::CliError::invalid(
            "--format TEMPLATE applies to the commands that list rows (ps, network ls, endpoint ls, namespace ls, port ls, node ls, lb ls, events); \
             use --format json or table here",
        ));
    }
    let ctx = Ctx { socket: cli.socket, format: cli.format };
    use commands::*;
    match cli.command {
        Command::Network(cmd) => match cmd {
            NetworkCmd::Create(a) => network::create(&ctx, &a),
            NetworkCmd::Ls(a) => network::ls(&ctx, &a),
            NetworkCmd::Inspect { names } => network::inspect(&ctx, &names),
            NetworkCmd::Rm { names } => network::rm(&ctx, &names),
            NetworkCmd::Connect(a) => network::connect(&ctx, &a),
            NetworkCmd::Disconnect(a) => network::disconnect(&ctx, &a),
        },
        Command::Endpoint(cmd) => match cmd {
            EndpointCmd::Create { net, ip, mac, name } => endpoint::create(&ctx, &net, &ip, mac, name),
            EndpointCmd::Ls(a) => endpoint::ls(&ctx, &a),
            EndpointCmd::Inspect { names } => endpoint::inspect(&ctx, &names),
            EndpointCmd::Rm { names } => endpoint::rm(&ctx, &names),
        },
        Command::Namespace(cmd) => match cmd {
            NamespaceCmd::Create { name, netns } => namespace::create(&ctx, name, netns),
            NamespaceCmd::Ls(a) => namespace::ls(&ctx, &a),
            NamespaceCmd::Inspect { names } => namespace::inspect(&ctx, &names),
            NamespaceCmd::Rm { names } => namespace::rm(&ctx, &names),
        },
        Command::Port(p) => match p.cmd {
            Some(PortCmd::Ls(a)) => port::ls(&ctx, &a),
            Some(PortCmd::Add(a)) => port::add(&ctx, &a),
            Some(PortCmd::Rm(a)) => port::rm(&ctx, &a),
            None => port::show_container(&ctx, &p.show),
        },
        Command::Policy(cmd) => match cmd {
            PolicyCmd::Ls(a) => policy::ls(&ctx, &a),
            PolicyCmd::Add(a) => policy::add(&ctx, &a),
            PolicyCmd::Rm(a) => policy::rm(&ctx, &a),
        },
        Command::Lb(cmd) => match cmd {
            LbCmd::Create(a) => lb::create(&ctx, &a),
            LbCmd::Ls(a) => lb::ls(&ctx, &a),
            LbCmd::Inspect { names } => lb::inspect(&ctx, &names),
            LbCmd::Rm { names } => lb::rm(&ctx, &names),
            LbCmd::AddBackend(a) => lb::add_backend(&ctx, &a),
            LbCmd::RmBackend(a) => lb::rm_backend(&ctx, &a),
        },
        Command::Inspect(a) => inspect::inspect(&ctx, &a),
        Command::Run(a) => run::run(&ctx, &a),
        Command::Exec(a) => run::exec(&ctx, &a),
        Command::Ps(a) => ps::ps(&ctx, &a),
        Command::Rm(a) => ps::rm(&ctx, &a),
        Command::Node(cmd) => match cmd {
            NodeCmd::Ls(a) => node::ls(&ctx, &a),
            NodeCmd::Rm { names } => node::rm(&ctx, &names),
        },
        Command::Events(a) => events::events(&ctx, &a),
        Command::Info => info::info(&ctx),
        Command::Version => info::version(&ctx),
        Command::Man { dir } => man(dir.as_deref()),
        Command::Completion { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "hnsctl", &mut std::io::stdout());
            Ok(0)
        }
    }
}

/// `hnsctl man`: hnsctl.1 on stdout, or every page into `dir`.
fn man(dir: Option<&std::path::Path>) -> error::Result<i32> {
    let cmd = Cli::command();
    match dir {
        Some(dir) => {
            std::fs::create_dir_all(dir).map_err(|e| error::CliError::local(format!("cannot create {}: {e}", dir.display())))?;
            clap_mangen::generate_to(cmd, dir).map_err(|e| error::CliError::local(format!("cannot write the manual pages to {}: {e}", dir.display())))?;
        }
        None => {
            let mut out = Vec::new();
            clap_mangen::Man::new(cmd).render(&mut out).map_err(|e| error::CliError::local(format!("cannot render the manual page: {e}")))?;
            output::print_str(&String::from_utf8_lossy(&out));
        }
    }
    Ok(0)
}

fn main() {
    // Rust ignores SIGPIPE; restore the default so `hnsctl ... | head` ends quietly and so the
    // programs that `run` and `exec` start do not inherit an ignored SIGPIPE.
    // SAFETY: setting a signal disposition at start, before any thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    let code = match dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            e.report();
            e.exit_code()
        }
    };
    std::process::exit(code);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Cli {
        Cli::try_parse_from(args).unwrap_or_else(|e| panic!("{args:?}: {e}"))
    }

    fn run_args(args: &[&str]) -> RunArgs {
        match parse(args).command {
            Command::Run(a) => a,
            other => panic!("not run: {other:?}"),
        }
    }

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn run_with_double_dash() {
        let a = run_args(&["hnsctl", "run", "--net", "x", "--", "cmd", "a"]);
        assert_eq!(a.net, "x");
        assert_eq!(a.program.command, vec!["cmd", "a"]);
    }

    #[test]
    fn run_keeps_options_after_the_command_for_the_command() {
        let a = run_args(&["hnsctl", "run", "--net", "x", "cmd", "-a"]);
        assert_eq!(a.net, "x");
        assert_eq!(a.program.command, vec!["cmd", "-a"]);
        let a = run_args(&["hnsctl", "run", "-d", "--name", "web", "sleep", "--name", "z", "-d"]);
        assert!(a.detach);
        assert_eq!(a.name.as_deref(), Some("web"));
        assert_eq!(a.program.command, vec!["sleep", "--name", "z", "-d"]);
    }

    #[test]
    fn run_defaults_and_aliases() {
        let a = run_args(&["hnsctl", "run", "true"]);
        assert_eq!(a.net, "nat");
        assert!(!a.detach && !a.rm);
        let a = run_args(&["hnsctl", "run", "--network=host", "-it", "--rm", "--alias", "a", "--alias", "b", "sh"]);
        assert_eq!(a.net, "host");
        assert!(a.rm && a.program.interactive && a.program.tty);
        assert_eq!(a.alias, vec!["a", "b"]);
        let a = run_args(&["hnsctl", "run", "--", "-weird", "--x"]);
        assert_eq!(a.program.command, vec!["-weird", "--x"]);
        assert!(Cli::try_parse_from(["hnsctl", "run"]).is_err());
        assert!(Cli::try_parse_from(["hnsctl", "run", "--net", "x"]).is_err());
    }

    #[test]
    fn exec_forms() {
        for args in [&["hnsctl", "exec", "web", "--", "ip", "-br", "addr"][..], &["hnsctl", "exec", "web", "ip", "-br", "addr"][..]] {
            match parse(args).command {
                Command::Exec(a) => {
                    assert_eq!(a.container, "web");
                    assert_eq!(a.program.command, vec!["ip", "-br", "addr"]);
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn global_flags_anywhere_before_the_command() {
        let cli = parse(&["hnsctl", "network", "ls", "--format", "json", "--socket", "/tmp/s.sock"]);
        assert_eq!(cli.format, Format::Json);
        assert_eq!(cli.socket, PathBuf::from("/tmp/s.sock"));
        // After the command of `run`, they belong to the command.
        let cli = parse(&["hnsctl", "--format", "json", "run", "echo", "--format", "table"]);
        assert_eq!(cli.format, Format::Json);
        match cli.command {
            Command::Run(a) => assert_eq!(a.program.command, vec!["echo", "--format", "table"]),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn connect_forms() {
        match parse(&["hnsctl", "network", "connect", "mynat", "web", "--ip", "10.0.0.9", "--alias", "db"]).command {
            Command::Network(NetworkCmd::Connect(a)) => {
                assert_eq!(a.container.as_deref(), Some("web"));
                assert_eq!(a.ip.as_deref(), Some("10.0.0.9"));
            }
            other => panic!("{other:?}"),
        }
        match parse(&["hnsctl", "network", "connect", "mynat", "--netns", "/run/netns/b", "--name", "b"]).command {
            Command::Network(NetworkCmd::Connect(a)) => {
                assert_eq!(a.container, None);
                assert_eq!(a.netns, Some(PathBuf::from("/run/netns/b")));
            }
            other => panic!("{other:?}"),
        }
        assert!(Cli::try_parse_from(["hnsctl", "network", "connect", "mynat"]).is_err());
        assert!(Cli::try_parse_from(["hnsctl", "network", "connect", "mynat", "web", "--netns", "/x"]).is_err());
    }

    #[test]
    fn list_aliases() {
        assert!(matches!(parse(&["hnsctl", "network", "list"]).command, Command::Network(NetworkCmd::Ls(_))));
        assert!(matches!(parse(&["hnsctl", "network", "remove", "a"]).command, Command::Network(NetworkCmd::Rm { .. })));
        assert!(matches!(parse(&["hnsctl", "ns", "ls"]).command, Command::Namespace(NamespaceCmd::Ls(_))));
    }

    #[test]
    fn publish_is_repeatable() {
        let a = run_args(&["hnsctl", "run", "-p", "8080:80", "--publish", "53/udp", "-p=[::1]:9000:90", "-d", "sleep", "-p", "1"]);
        assert_eq!(a.publish, vec!["8080:80", "53/udp", "[::1]:9000:90"]);
        assert_eq!(a.program.command, vec!["sleep", "-p", "1"]);
        assert!(run_args(&["hnsctl", "run", "true"]).publish.is_empty());
    }

    #[test]
    fn port_forms() {
        match parse(&["hnsctl", "port", "ls"]).command {
            Command::Port(PortCommand { cmd: Some(PortCmd::Ls(a)), .. }) => assert_eq!(a.container, None),
            other => panic!("{other:?}"),
        }
        match parse(&["hnsctl", "port", "list", "web"]).command {
            Command::Port(PortCommand { cmd: Some(PortCmd::Ls(a)), .. }) => assert_eq!(a.container.as_deref(), Some("web")),
            other => panic!("{other:?}"),
        }
        match parse(&["hnsctl", "port", "add", "web", "8080:80", "53/udp", "--net", "mynat"]).command {
            Command::Port(PortCommand { cmd: Some(PortCmd::Add(a)), .. }) => {
                assert_eq!(a.container, "web");
                assert_eq!(a.specs, vec!["8080:80", "53/udp"]);
                assert_eq!(a.net.as_deref(), Some("mynat"));
            }
            other => panic!("{other:?}"),
        }
        match parse(&["hnsctl", "port", "remove", "web", "[2001:db8::10]:8080:80"]).command {
            Command::Port(PortCommand { cmd: Some(PortCmd::Rm(a)), .. }) => {
                assert_eq!(a.specs, vec!["[2001:db8::10]:8080:80"]);
                assert_eq!(a.net, None);
            }
            other => panic!("{other:?}"),
        }
        assert!(Cli::try_parse_from(["hnsctl", "port", "add", "web"]).is_err());
        assert!(Cli::try_parse_from(["hnsctl", "port", "rm", "web"]).is_err());
    }

    fn port_show(args: &[&str]) -> PortShowArgs {
        match parse(args).command {
            Command::Port(PortCommand { cmd: None, show }) => show,
            other => panic!("not `port CONTAINER`: {other:?}"),
        }
    }

    #[test]
    fn port_container_like_docker_port() {
        let a = port_show(&["hnsctl", "port", "web"]);
        assert_eq!((a.container.as_deref(), a.private_port), (Some("web"), None));
        let a = port_show(&["hnsctl", "port", "web", "80/tcp"]);
        assert_eq!((a.container.as_deref(), a.private_port.as_deref()), (Some("web"), Some("80/tcp")));
        // A container named like a subcommand, after `--`.
        let a = port_show(&["hnsctl", "port", "--", "ls"]);
        assert_eq!(a.container.as_deref(), Some("ls"));
        let a = port_show(&["hnsctl", "port", "--", "rm", "53/udp"]);
        assert_eq!((a.container.as_deref(), a.private_port.as_deref()), (Some("rm"), Some("53/udp")));
        // Nothing at all, or too much, is a usage error.
        for args in [&["hnsctl", "port"][..], &["hnsctl", "port", "web", "80", "81"][..]] {
            let e = Cli::try_parse_from(args).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{args:?}: {e}");
        }
        let help = Cli::command().find_subcommand_mut("port").unwrap().render_long_help().to_string();
        assert!(help.contains("hnsctl port CONTAINER PORT[/PROTO]") && help.contains("hnsctl port -- NAME"), "{help}");
    }

    #[test]
    fn mac_aliases_and_ip6() {
        let a = run_args(&["hnsctl", "run", "--mac=00-15-5D-00-00-10", "--ip6", "fd00::10", "true"]);
        assert_eq!(a.mac_address.as_deref(), Some("00-15-5D-00-00-10"));
        assert_eq!(a.ip6.as_deref(), Some("fd00::10"));
        let a = run_args(&["hnsctl", "run", "--mac-address", "00:15:5d:00:00:11", "true"]);
        assert_eq!(a.mac_address.as_deref(), Some("00:15:5d:00:00:11"));
        match parse(&["hnsctl", "network", "connect", "ds", "web", "--mac", "00-15-5D-00-00-12", "--ip6", "fd00::12", "--endpoint-name", "web-2"]).command {
            Command::Network(NetworkCmd::Connect(a)) => {
                assert_eq!(a.mac_address.as_deref(), Some("00-15-5D-00-00-12"));
                assert_eq!(a.ip6.as_deref(), Some("fd00::12"));
                assert_eq!(a.endpoint_name.as_deref(), Some("web-2"));
            }
            other => panic!("{other:?}"),
        }
        let run = Cli::command().find_subcommand_mut("run").unwrap().render_long_help().to_string();
        assert!(run.contains("--ip6 <IP>") && run.contains("--mac") && run.contains("--ip6 fd00:32::10"), "{run}");
    }

    #[test]
    fn templates_only_for_lists() {
        let cli = parse(&["hnsctl", "network", "ls", "--format", "{{.Name}}"]);
        assert!(matches!(cli.format, Format::Template(_)));
        assert!(lists_rows(&cli.command));
        assert!(lists_rows(&parse(&["hnsctl", "ps", "--format", "{{.Ports}}"]).command));
        assert!(!lists_rows(&parse(&["hnsctl", "info"]).command));
        assert!(!lists_rows(&parse(&["hnsctl", "port", "web"]).command));
        let e = dispatch(parse(&["hnsctl", "--format", "{{.Name}}", "info"])).unwrap_err().render();
        assert!(e.contains("--format TEMPLATE applies to the commands that list rows"), "{e}");
        let e = Cli::try_parse_from(["hnsctl", "--format", "yaml", "network", "ls"]).unwrap_err().to_string();
        assert!(e.contains("expected table, json, or a template"), "{e}");
    }

    #[test]
    fn inspect_any_object() {
        match parse(&["hnsctl", "inspect", "web", "nat"]).command {
            Command::Inspect(a) => assert_eq!((a.kind, a.names), (None, vec!["web".to_owned(), "nat".to_owned()])),
            other => panic!("{other:?}"),
        }
        match parse(&["hnsctl", "inspect", "--type", "namespace", "web"]).command {
            Command::Inspect(a) => assert_eq!(a.kind, Some(ObjectKind::Container)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn every_suggestion_is_a_command() {
        // clap suggests the closest command name or alias; each must parse as a command.
        for typo in ["inspect", "inspct", "netwrk", "pss", "namespce", "prt", "versoin"] {
            let e = Cli::try_parse_from(["hnsctl", typo, "--help"]).unwrap_err().to_string();
            if let Some(tip) = e.split("similar subcommand exists: '").nth(1) {
                let suggested = tip.split('\'').next().unwrap();
                assert!(Cli::command().find_subcommand(suggested).is_some(), "{typo}: suggests {suggested}: {e}");
                assert_ne!(suggested, "ns", "{typo}: {e}");
            }
        }
        assert!(Cli::try_parse_from(["hnsctl", "inspect", "web"]).is_ok());
    }

    #[test]
    fn port_help_maps_the_windows_cmdlets() {
        let mut cli = Cli::command();
        let port = cli.find_subcommand_mut("port").unwrap();
        let help = port.render_long_help().to_string();
        for s in ["Add-NetNatStaticMapping", "Remove-NetNatStaticMapping", "Get-NetNatStaticMapping", "Open-ContainerPort", "HOSTIP::CPORT", "[2001:db8::10]:8080:80", "Examples:"] {
            assert!(help.contains(s), "port help lacks {s}:\n{help}");
        }
        for (sub, wanted) in [("ls", "hnsctl port ls web"), ("add", "hnsctl port add web 8080:80"), ("rm", "hnsctl port rm web 8080:80")] {
            let help = port.find_subcommand_mut(sub).unwrap().render_long_help().to_string();
            assert!(help.contains(wanted) && help.contains("Examples:"), "port {sub} help lacks {wanted}:\n{help}");
        }
        let run = cli.find_subcommand_mut("run").unwrap().render_long_help().to_string();
        assert!(run.contains("--publish <SPEC>") && run.contains("H1-H2:CPORT") && run.contains("-p 8080:80"), "{run}");
    }

    #[test]
    fn lb_forms() {
        match parse(&["hnsctl", "lb", "create", "--vip", "10.96.0.10", "--vip", "10.96.0.11", "--port", "tcp/80:8080", "--port", "udp/53", "--backend", "web1", "--backend", "web2", "--affinity", "source-proto", "--internal", "--net", "nat"]).command {
            Command::Lb(LbCmd::Create(a)) => {
                assert_eq!((a.vip.len(), a.port.len(), a.backend.len()), (2, 2, 2));
                assert_eq!(a.affinity, lbspec::Affinity::SourceProto);
                assert!(a.internal && !a.local_routed && !a.ipv6);
                assert_eq!(a.net.as_deref(), Some("nat"));
            }
            other => panic!("{other:?}"),
        }
        match parse(&["hnsctl", "lb", "create", "--vip", "10.96.0.12", "--port", "80", "--dsr", "--preserve-dip", "--backend", "web1"]).command {
            Command::Lb(LbCmd::Create(a)) => {
                let r = commands::lb::request(&a).unwrap();
                assert_eq!(r.flags, hns_api::LB_FLAG_DSR, "--dsr is EnableDirectServerReturn");
                assert_eq!(r.port_mappings[0].flags, hns_api::LB_PM_PRESERVE_DIP, "--preserve-dip is the port mapping's PreserveDIP");
            }
            other => panic!("{other:?}"),
        }
        // --port is required; --affinity takes only its words.
        assert!(Cli::try_parse_from(["hnsctl", "lb", "create", "--backend", "web1"]).is_err());
        assert!(Cli::try_parse_from(["hnsctl", "lb", "create", "--port", "80", "--affinity", "sticky"]).is_err());
        match parse(&["hnsctl", "lb", "rm-backend", "5a3d0f6e", "web1", "web2"]).command {
            Command::Lb(LbCmd::RmBackend(a)) => assert_eq!((a.lb.as_str(), a.endpoints.len()), ("5a3d0f6e", 2)),
            other => panic!("{other:?}"),
        }
        assert!(Cli::try_parse_from(["hnsctl", "lb", "add-backend", "5a3d0f6e"]).is_err(), "an endpoint is required");
        assert!(matches!(parse(&["hnsctl", "loadbalancer", "list"]).command, Command::Lb(LbCmd::Ls(_))));
        assert!(lists_rows(&parse(&["hnsctl", "lb", "ls", "--format", "{{.Backends}}"]).command));
        let mut cli = Cli::command();
        let lb = cli.find_subcommand_mut("lb").unwrap();
        let create = lb.find_subcommand_mut("create").unwrap().render_long_help().to_string();
        for s in ["[PROTO/]EXTERNAL[:INTERNAL]", "--affinity", "source-proto", "hnsctl lb create --vip 10.96.0.10 --port tcp/80:8080 --backend web1 --backend web2", "every address of the host"] {
            assert!(create.contains(s), "lb create help lacks {s}:\n{create}");
        }
        let help = lb.render_long_help().to_string();
        assert!(help.contains("New-HnsLoadBalancer") && help.contains("no name"), "{help}");
    }

    #[test]
    fn run_policy_flags() {
        let a = run_args(&["hnsctl", "run", "--acl", "allow in proto=tcp local-ports=80", "--acl", "allow out", "--outbound-nat", "--outbound-nat-exception", "10.244.0.0/16", "-d", "sleep", "--acl", "x"]);
        assert_eq!(a.acl, vec!["allow in proto=tcp local-ports=80", "allow out"]);
        assert_eq!(a.outbound_nat.as_deref(), Some(""));
        assert_eq!(a.outbound_nat_exception, vec!["10.244.0.0/16"]);
        assert_eq!(a.program.command, vec!["sleep", "--acl", "x"]);
        let a = run_args(&["hnsctl", "run", "--outbound-nat=10.244.0.0/16,10.96.0.0/12", "true"]);
        assert_eq!(a.outbound_nat.as_deref(), Some("10.244.0.0/16,10.96.0.0/12"));
        assert_eq!(run_args(&["hnsctl", "run", "true"]).outbound_nat, None);
        match parse(&["hnsctl", "policy", "add", "web", "--rule", "allow in"]).command {
            Command::Policy(PolicyCmd::Add(a)) => assert_eq!(a.rule.as_deref(), Some("allow in")),
            other => panic!("{other:?}"),
        }
        assert!(Cli::try_parse_from(["hnsctl", "policy", "add", "web", "--rule", "allow in", "--priority", "5"]).is_err(), "a rule in words or flags, not both");
    }

    #[test]
    fn help_maps_the_windows_cmdlets() {
        let help = Cli::command().render_long_help().to_string();
        for s in ["New-ContainerNetwork", "Get-ContainerNetwork", "Remove-ContainerNetwork", "Join-ContainerNetwork", "Leave-ContainerNetwork", "DNSSuffix", "SourceMac", "hnsctl exec web -- ip addr"] {
            assert!(help.contains(s), "help lacks {s}");
        }
    }
}
