"""The targets of ``nox -s mutants``: what is mutated, by mutmut and by hand, and which fast tests
must catch it. Paths are relative to the repository root.

A hand mutant replaces one exact snippet (it must occur once in its file, else the run stops
and names the stale mutant). Hand mutants cover what mutmut cannot reach: decorated functions
(mutmut skips any decorator but ``staticmethod`` and ``classmethod``: ``lru_cache``,
``property``), SQL text and regular expressions (mutmut only garbles strings).
"""

from __future__ import annotations

from attrs import frozen

BASELINE = 90


@frozen
class HandMutant:
    path: str
    old: str
    new: str
    why: str  # the bug this mutant stands for

    def describe(self) -> str:
        return f"{self.path}: {self.why} ({self.old!r} -> {self.new!r})"


@frozen
class Target:
    name: str
    tests: tuple[str, ...]
    mutmut: tuple[str, ...] = ()
    # mutmut's mutant names to run and count (globs), when only some functions of the files are
    # the target: "lab.labd.identity.identities.x_usable*",
    # "lab.labd.identity.identities.xǁIdentitiesǁredeem*"
    only: tuple[str, ...] = ()
    hand: tuple[HandMutant, ...] = ()


RBAC = "src/lab/labd/access/rbac.py"
RATELIMIT = "src/lab/labd/access/ratelimit.py"
STREAMS = "src/lab/proto/streams.py"
HUB_SESSION = "src/lab/proto/hub_session.py"
AUDITCHAIN = "src/lab/store/auditchain.py"
AUDITVERIFY = "src/lab/store/auditverify.py"
CHECKPOINTS = "src/lab/labd/audit/checkpoints.py"
WITNESS = "src/lab/runtime/witness.py"
RELAY = "src/lab/labd/relay/relay.py"
SECRETS = "src/lab/labd/identity/secrets.py"
IDENTITY = "src/lab/labd/identity/identities.py"
RULES = "src/lab/store/rules.py"
SQL_IDENTITY = "src/lab/store/sql/identity.py"
FASTPATH = "src/lab/bastion/fastpath.py"
CLASSIFY = "src/lab/labd/kubeproxy/classify.py"
KUBECONFIG = "src/lab/kube/config.py"
KUBE_APPLY = "src/lab/kube/apply.py"
MODULE_VALUES = "src/lab/modules/values.py"
ENVELOPE = "src/lab/pki/envelope.py"
APPLY_PLAN = "src/lab/labd/apply/plan.py"
APPLY_DOCUMENTS = "src/lab/apply/documents.py"
APPLY_DIFFS = "src/lab/apply/diffs.py"
SECRETS_KEYS = "src/lab/labd/secrets/keys.py"
CLUSTER_PLAN = "src/lab/labd/clusterops/plan.py"
CLUSTER_JOIN = "src/lab/labd/clusterops/token.py"
CLUSTER_RENDER = "src/lab/labd/clusterops/render.py"


def _functions(module: str, *names: str) -> tuple[str, ...]:
    """mutmut's mutant name globs of ``names`` (``Class.method`` for a method) in ``module``."""
    return tuple(
        f"{module}.xǁ{n.replace('.', chr(0x1C1))}__mutmut_*"
        if "." in n
        else f"{module}.x_{n}__mutmut_*"
        for n in names
    )


_TARGETS = [
    Target(
        name="rbac",
        tests=("tests/rbac/test_decide.py", "tests/rbac/test_wildcards.py"),
        mutmut=(RBAC,),
        hand=(
            # _compile is cached with lru_cache, so mutmut leaves it alone.
            HandMutant(RBAC, ".fullmatch(", ".match(", "a pattern matches what it is a prefix of"),
            HandMutant(RBAC, ".fullmatch(", ".search(", "a pattern matches anywhere in a value"),
            HandMutant(RBAC, '".*".join', '"[^:]*".join', "'*' stops spanning ':'"),
            HandMutant(RBAC, '".*".join', '"[^/]*".join', "'*' stops spanning '/'"),
            HandMutant(RBAC, '".*".join', '".+".join', "'*' no longer matches nothing"),
            HandMutant(RBAC, "re.escape(p)", "p", "regex characters in a pattern are live"),
            HandMutant(RBAC, 'split("*")', 'split("**")', "a single '*' is literal"),
            HandMutant(RBAC, "re.DOTALL)", "0)", "'*' stops at a newline"),
            HandMutant(RBAC, "re.DOTALL)", "re.DOTALL | re.IGNORECASE)", "case is ignored"),
        ),
    ),
    Target(
        name="ratelimit",
        tests=("tests/labd/test_ratelimit.py",),
        mutmut=(RATELIMIT,),
    ),
    Target(
        name="proto_streams",
        tests=("tests/proto/test_streams.py", "tests/proto/test_stream_windows.py"),
        mutmut=(STREAMS,),
        hand=(
            # a property, which mutmut skips
            HandMutant(STREAMS, "return self.highest + 1", "return self.highest", "an id reused"),
        ),
    ),
    Target(
        name="proto_hub_session",
        tests=("tests/proto/test_hub_session.py",),
        mutmut=(HUB_SESSION,),
        hand=(
            # properties, which mutmut skips
            HandMutant(
                HUB_SESSION,
                "return not self.finished and self.aborted is None",
                "return not self.finished",
                "a stream labd aborted still counts as running (and is cancelled again)",
            ),
            HandMutant(
                HUB_SESSION,
                "return self.close_code is not None",
                "return False",
                "a closing session counts as open",
            ),
            HandMutant(
                HUB_SESSION,
                "return self.phase is Phase.OPEN",
                "return self.phase is not Phase.HELLO",
                "welcomed before the registry took the session",
            ),
            HandMutant(
                HUB_SESSION,
                "return isinstance(self.start, ExecStart)",
                "return True",
                "a log stream is taken for an exec",
            ),
            HandMutant(
                HUB_SESSION,
                'return f"server/{self.name}"',
                "return self.name",
                "subject unprefixed",
            ),
        ),
    ),
    Target(
        name="relay_credit",
        tests=("tests/labd/test_relay_credit.py",),
        mutmut=(RELAY,),
        # The relay's flow control; admission, audit and the hub's stream are end-to-end
        # matters (tests/exec, tests/faults).
        only=_functions(
            "lab.labd.relay.relay",
            "Relay.__init__",
            "Relay.grant",
            "Relay.control",
            "Relay.stdin",
            "Relay._downlink",
            "Relay._forward",
            "Relay._uplink",
            "Relay._pump_up",
        ),
    ),
    Target(
        name="auditchain",
        tests=(
            "tests/store/test_auditchain.py",
            "tests/store/test_auditchain_pinned.py",
            "tests/store/test_auditverify.py",
            "tests/labd/test_audit_pages.py",
        ),
        mutmut=(AUDITCHAIN, AUDITVERIFY),
        hand=(
            # properties, which mutmut skips
            HandMutant(AUDITCHAIN, "hexdigest()[:16]", "hexdigest()[:12]", "a shorter key id"),
            HandMutant(
                AUDITCHAIN, "_KEY_ID_LABEL, hashlib", "b'', hashlib", "key id without its label"
            ),
            HandMutant(
                AUDITVERIFY,
                "isinstance(self._start, ChainStart) else 2**63",
                "isinstance(self._start, ChainStart) else 0",
                "a pending chain is verified as keyed",
            ),
            HandMutant(
                AUDITVERIFY,
                "return self._start.from_seq if",
                "return self._start.from_seq + 1 if",
                "the first keyed entry is taken for a legacy one",
            ),
            HandMutant(AUDITVERIFY, 'self.kind == "ok"', 'self.kind != "edited"', "ok when broken"),
            # the bug the issue names: hashed in local time (tests run in UTC)
            HandMutant(AUDITCHAIN, "value.astimezone(UTC)", "value.astimezone()", "local time"),
        ),
    ),
    Target(
        name="audit_checkpoints",
        tests=("tests/labd/test_checkpoints.py", "tests/labd/test_audit_pages.py"),
        mutmut=(CHECKPOINTS,),
        # Checkpointer.run is the timed loop around write() (and __init__ mostly its state);
        # the security tests drive it.
        only=(
            *_functions(
                "lab.labd.audit.checkpoints",
                "_signed_bytes",
                "make_checkpoint",
                "parse_checkpoint",
                "CheckpointLog.__init__",
                "CheckpointLog.append",
                "CheckpointLog.read",
                "CheckpointLog.last",
                "chain_start",
                "Checkpointer.write",
                "Checkpointer.wait_written",
                "verify_log",
            ),
        ),
    ),
    Target(name="audit_witness", tests=("tests/runtime/test_witness.py",), mutmut=(WITNESS,)),
    Target(
        name="tokens",
        tests=(
            "tests/labd/test_tokens.py",
            "tests/store/test_contract_identity.py",
            "-m",
            "not postgres",
        ),
        mutmut=(SECRETS, IDENTITY, RULES),
        only=(
            "lab.labd.identity.secrets.*",
            *_functions(
                "lab.labd.identity.identities",
                "check_hostname",
                "check_username",
                "_hardware_id",
                "_bindings",
                "usable",
                "token_binding",
                "token_trace",
                "check_agent_binding",
                "bound_username",
                "Identities.create_token",
                "Identities.check_token",
                "Identities.consume",
                "Identities.redeem",
            ),
            *_functions("lab.store.rules", "token_refusal", "before_use"),
        ),
        hand=(
            # the one conditional UPDATE that decides a use (on SQLite; tokens_postgres below)
            HandMutant(SQL_IDENTITY, "expires_at > ?", "expires_at >= ?", "usable at expiry"),
            HandMutant(SQL_IDENTITY, "uses < max_uses", "uses <= max_uses", "one use too many"),
            HandMutant(
                SQL_IDENTITY,
                "(NOT reusable AND uses = 0)",
                "(NOT reusable AND uses < 2)",
                "a one-time token works twice",
            ),
            HandMutant(
                SQL_IDENTITY,
                "WHERE id = ? AND revoked_at IS NULL AND",
                "WHERE id = ? AND",
                "a revoked token still works",
            ),
            HandMutant(
                SQL_IDENTITY,
                "(max_uses IS NULL OR uses < max_uses)",
                "(uses < max_uses)",
                "a reusable token without max_uses never works",
            ),
            HandMutant(SQL_IDENTITY, "SET uses = uses + 1", "SET uses = uses", "uses not counted"),
            HandMutant(
                SQL_IDENTITY,
                "(reusable AND",
                "(TRUE AND",
                "a one-time token is reusable",
            ),
            # the token format check, beside mutmut's own
            HandMutant(SECRETS, "len(token) > 256", "len(token) > 257", "a longer token passes"),
        ),
    ),
    Target(
        name="tokens_postgres",
        # PostgreSQL's consuming UPDATE against the storage contract on a throwaway server.
        tests=("tests/store/test_contract_identity.py", "-m", "postgres", "-k", "token"),
        hand=(
            HandMutant(SQL_IDENTITY, "expires_at > ?", "expires_at >= ?", "usable at expiry"),
            HandMutant(SQL_IDENTITY, "uses < max_uses", "uses <= max_uses", "one use too many"),
            HandMutant(
                SQL_IDENTITY,
                "(NOT reusable AND uses = 0)",
                "(NOT reusable AND uses < 2)",
                "a one-time token works twice",
            ),
            HandMutant(
                SQL_IDENTITY,
                "WHERE id = ? AND revoked_at IS NULL AND",
                "WHERE id = ? AND",
                "a revoked token still works",
            ),
            HandMutant(
                SQL_IDENTITY,
                "(max_uses IS NULL OR uses < max_uses)",
                "(uses < max_uses)",
                "a reusable token without max_uses never works",
            ),
            HandMutant(SQL_IDENTITY, "SET uses = uses + 1", "SET uses = uses", "uses not counted"),
            HandMutant(SQL_IDENTITY, "(reusable AND", "(TRUE AND", "a one-time token is reusable"),
        ),
    ),
]

_TARGETS += [
    Target(
        name="bastion_fastpath",
        tests=("tests/bastion/test_fastpath_head.py",),
        mutmut=(FASTPATH,),
        # the sans-IO head parser; DispatchFront is the trio driver (tests/bastion/test_fastpath.py)
        only=_functions("lab.bastion.fastpath", "parse_head", "first_mac"),
        hand=(
            # the module's patterns and sets, which mutmut leaves alone
            HandMutant(
                FASTPATH,
                '_PREFIX = b"GET /dispatch?"',
                '_PREFIX = b"GET /dispatch"',
                "another path is waited for instead of handed off",
            ),
            HandMutant(FASTPATH, r"\?([!-~]*) HTTP", r"\?([ -~]*) HTTP", "a space in the target"),
            HandMutant(FASTPATH, r"HTTP/1\.1\r\n", r"HTTP/1.1\r\n", "HTTP/1x1 taken"),
            HandMutant(FASTPATH, r"HTTP/1\.1\r\n", r"HTTP/1\.1\r?\n", "a bare LF ends the line"),
            HandMutant(
                FASTPATH,
                "_REQUEST_LINE.match(buf)",
                "_REQUEST_LINE.search(buf)",
                "a request line found further in the head",
            ),
            HandMutant(FASTPATH, "~0-9A-Za-z-]+):", "~0-9A-Za-z -]+):", "a space in a name"),
            HandMutant(FASTPATH, "):[ \\t]*(", "):[ ]*(", "a tab after the colon refused"),
            HandMutant(FASTPATH, "\\x80-\\xff]*?)", "]*?)", "obs-text refused"),
            HandMutant(FASTPATH, "\\x20-\\x7e", "\\x20-\\x7f", "DEL taken in a value"),
            HandMutant(FASTPATH, "([\\t\\x20", "([\\x20", "a tab inside a value refused"),
            HandMutant(FASTPATH, "\\xff]*?)", "\\xff]*)", "trailing whitespace kept in a value"),
            HandMutant(FASTPATH, r'rb"(?<!\r)\n"', r'rb"\n"', "every incomplete head handed off"),
            HandMutant(FASTPATH, 'b"content-length", ', "", "a body taken"),
            HandMutant(FASTPATH, 'b"transfer-encoding", ', "", "a chunked body taken"),
            HandMutant(FASTPATH, 'b"upgrade", ', "", "an Upgrade header taken"),
            HandMutant(FASTPATH, ', b"expect"', "", "Expect: 100-continue taken"),
        ),
    ),
    Target(
        name="kube_classify",
        tests=(
            "tests/kubeproxy/test_classify.py",
            "tests/kubeproxy/test_classify_edges.py",
            "tests/security/test_kube_proxy_verbs.py",
        ),
        mutmut=(CLASSIFY,),
        hand=(
            # properties, which mutmut skips
            HandMutant(CLASSIFY, 'return f"kube:{self.verb}"', "return self.verb", "bare verb"),
            HandMutant(
                CLASSIFY,
                'return f"{base}/discovery"',
                'return f"{base}/path{self.path}"',
                "API descriptions judged path by path",
            ),
            HandMutant(
                CLASSIFY, 'return f"{base}/path{self.path}"', 'return f"{base}/path"', "any path"
            ),
            HandMutant(
                CLASSIFY,
                'if self.namespace and self.resource != "namespaces":',
                "if self.namespace:",
                "a namespace judged inside itself",
            ),
            HandMutant(
                CLASSIFY,
                "if self.name:\n",
                "if False:\n",
                "an object judged as its whole collection",
            ),
            HandMutant(
                CLASSIFY,
                "if self.subresource and self.subresource not in CONNECT_SUBRESOURCES:",
                "if self.subresource:",
                "exec judged on pods/x/exec rather than the pod",
            ),
            HandMutant(
                CLASSIFY,
                "if self.subresource and self.subresource not in CONNECT_SUBRESOURCES:",
                "if False:",
                "a subresource judged as its object",
            ),
            HandMutant(
                CLASSIFY,
                "return self.subresource in STREAM_SUBRESOURCES",
                "return self.subresource in CONNECT_SUBRESOURCES",
                "a proxy request audited as a session",
            ),
            HandMutant(
                CLASSIFY,
                '(f"?{self.query}" if self.query else "")',
                'f"?{self.query}"',
                "a bare '?' forwarded",
            ),
            # module constants and patterns, which mutmut leaves alone
            HandMutant(
                CLASSIFY,
                '{"exec", "attach", "portforward"}',
                '{"exec", "attach"}',
                "port-forward not a stream verb",
            ),
            HandMutant(CLASSIFY, '| {"proxy"}', "| set()", "proxy judged as a subresource get"),
            HandMutant(CLASSIFY, '"openapi", "version"}', '"openapi"}', "/version not discovery"),
            HandMutant(
                CLASSIFY,
                'frozenset({"status", "finalize"})',
                'frozenset({"finalize"})',
                "namespaces/NS/status read as a resource 'status' in NS",
            ),
            HandMutant(CLASSIFY, "[a-z0-9-]{0,61}", "[a-z0-9-]{0,62}", "64-character names"),
            HandMutant(CLASSIFY, "[a-z0-9-]{0,61}", "[a-z0-9.-]{0,61}", "dots in a name"),
            HandMutant(CLASSIFY, "[a-z0-9]([a-z0-9-]", "[a-z0-9-]([a-z0-9-]", "a leading '-'"),
            HandMutant(CLASSIFY, "[a-z0-9])?$", "[a-z0-9-])?$", "a trailing '-'"),
            HandMutant(CLASSIFY, r'"[\x00-\x1f\x7f]"', r'"[\x00-\x1f]"', "DEL passes"),
            HandMutant(
                CLASSIFY,
                '_SAFE = "-._~!$&\'()*+,;=:@"',
                '_SAFE = "-._~"',
                "sub-delims escaped on the way up",
            ),
        ),
    ),
    Target(
        name="kubeconfig",
        tests=("tests/kube/test_kubeconfig.py", "tests/kube/test_kubeconfig_edges.py"),
        mutmut=(KUBECONFIG,),
    ),
    Target(
        name="kube_apply_rules",
        tests=("tests/kube/test_apply_rules.py",),
        mutmut=(KUBE_APPLY,),
        # the pure rules; apply, fetch, delete and the waits run against the API double
        # (tests/apps/test_apply.py)
        only=_functions("lab.kube.apply", "managers", "prunable", "readiness"),
    ),
    Target(
        name="module_values",
        tests=("tests/modules/test_values.py",),
        mutmut=(MODULE_VALUES,),
        hand=(
            HandMutant(
                MODULE_VALUES,
                '_NAMES_ONLY = frozenset({"required", "additionalProperties"})',
                '_NAMES_ONLY = frozenset({"required"})',
                "an unexpected-property message hidden beside a secret",
            ),
            HandMutant(
                MODULE_VALUES,
                '_NAMES_ONLY = frozenset({"required", "additionalProperties"})',
                '_NAMES_ONLY = frozenset({"required", "additionalProperties", "not"})',
                "a rule that quotes the mapping lets its secret through",
            ),
        ),
    ),
    Target(
        name="secrets_envelope",
        tests=("tests/pki/test_envelope.py",),
        mutmut=(ENVELOPE, SECRETS_KEYS),
        hand=(
            # module constants and a property, which mutmut leaves alone
            HandMutant(ENVELOPE, "_NONCE = 12", "_NONCE = 16", "another nonce length"),
            HandMutant(ENVELOPE, '_PREFIX = "v1:"', '_PREFIX = "v2:"', "another format tag"),
            HandMutant(
                ENVELOPE,
                '_KEK_SALT = b"labctl secrets key-encryption key v1"',
                '_KEK_SALT = b"labctl secrets key-encryption key v2"',
                "the KEK changes across versions",
            ),
            HandMutant(ENVELOPE, "hexdigest()[:16]", "hexdigest()[:12]", "a shorter kek id"),
            HandMutant(
                ENVELOPE, "self.secret, _KEK_ID_LABEL,", "self.secret, b'',", "kek id unlabelled"
            ),
            HandMutant(
                SECRETS_KEYS,
                '_FROM_FILE = b"labctl-secrets-key-file\\x00"',
                '_FROM_FILE = b"labctl-secrets\\x00"',
                "a key file and a passphrase of the same bytes give one KEK",
            ),
        ),
    ),
    Target(
        name="apply_plan",
        tests=("tests/apply/test_plan.py",),
        mutmut=(APPLY_PLAN,),
    ),
    Target(
        name="apply_documents",
        tests=("tests/apply/test_documents.py", "tests/apply/test_documents_edges.py"),
        mutmut=(APPLY_DOCUMENTS, APPLY_DIFFS),
        # not schema_dir: it runs once, under validator's cache, before any mutant does
        only=(
            *_functions(
                "lab.apply.documents",
                "Source.__str__",
                "field_path",
                "_problem",
                "invalid",
                "check_document",
                "_StrictLoader.construct_mapping",
                "parse_text",
                "files_of",
                "read_documents",
                "declared",
                "from_document",
                "is_labd_kind",
                "document_of",
                "cluster_document",
                "dump_documents",
                "resolve_ref",
                "iter_labd",
            ),
            "lab.apply.diffs.*",
        ),
    ),
    Target(
        name="cluster_plan",
        tests=("tests/clusters/test_plan.py", "tests/clusters/test_plan_edges.py"),
        mutmut=(CLUSTER_PLAN, CLUSTER_JOIN, CLUSTER_RENDER),
    ),
]

TARGETS = {t.name: t for t in _TARGETS}
