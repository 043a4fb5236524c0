"""A KRR connector in Python, built by componentize-py against folkhub's contract
package (world folkhub:kit/http-answering-connector@2.2.0): it reads KRR's REST v2
over wasi:http and answers as the Rust krr connector 2.2.0 does, field for field.

The mapping follows Digdir's REST documentation of the lookup service
(felleslosninger/docs `_docs/Kontaktregisteret/oppslagstjenesten_rest.md`), as
connectors/krr/src/mapping.rs does: AKTIV gives reservation, notification status,
e-mail, mobile, digital mailbox and language; SLETTET (left KRR) gives nothing and
covers every field, so the host withdraws what KRR said before; IKKE_REGISTRERT is
not found. What an answer covers follows the token's scopes (config `scopes`, or
read from the answer), so a narrower scope never removes stored contact details.
"""
import json
import re
from urllib.parse import urlsplit

from componentize_py_types import Err, Ok
from wit_world import exports
from wit_world.exports import answers as a
from wit_world.exports import source as s
from wit_world.imports import host, outgoing_handler, streams, types

PRODUCTION = "https://kontaktregisteret.no/rest/v2"
UPSTREAM = "v2"
MAX_BATCH = 1000
FIELDS = ["contact.email", "contact.mobile", "contact.reservation", "contact.notification-status",
          "contact.digital-mailbox", "contact.digital-mailbox-provider", "language.preferred"]
CONTACT_SCOPE = ["contact.email", "contact.mobile", "contact.notification-status", "language.preferred"]
MAILBOX_SCOPE = ["contact.digital-mailbox", "contact.digital-mailbox-provider"]
RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")


def base_url():
    return (host.config("base-url") or PRODUCTION).rstrip("/")


def request(method, url, body=None):
    """One HTTP exchange; returns (status, body bytes) or raises Err(ConnectorError)."""
    parts = urlsplit(url)
    headers = [("accept", b"application/json")]
    if body is not None:
        headers.append(("content-type", b"application/json"))
    req = types.OutgoingRequest(types.Fields.from_list(headers))
    req.set_method(method)
    req.set_scheme(types.Scheme_Https() if parts.scheme == "https" else types.Scheme_Http())
    req.set_authority(parts.netloc)
    req.set_path_with_query(parts.path + ("?" + parts.query if parts.query else ""))
    out = req.body()
    # Hand the request over first: the host sends the body as it is
    # written, and a body larger than its buffer would wait forever for a
    # request that was not sent yet. Every resource is dropped by `with`,
    # children before parents, as the host requires.
    try:
        future = outgoing_handler.handle(req, None)
    except Err as e:
        raise Err(s.ConnectorError_Denied(f"{url}: {e.value}"))
    if body is not None:
        with out.write() as stream:
            for i in range(0, len(body), 4096):
                stream.blocking_write_and_flush(body[i:i + 4096])
    types.OutgoingBody.finish(out, None)
    with future:
        with future.subscribe() as ready:
            ready.block()
        answer = future.get()
    if answer is None or isinstance(answer.value, Err) or isinstance(answer.value, Ok) and isinstance(answer.value.value, Err):
        raise Err(s.ConnectorError_UpstreamUnavailable(f"{url}: no answer"))
    data = bytearray()
    with answer.value.value as response:
        status = response.status()
        with response.consume() as incoming:
            with incoming.stream() as stream:
                while True:
                    try:
                        data += stream.blocking_read(65536)
                    except Err as e:
                        if isinstance(e.value, streams.StreamError_Closed):
                            break
                        raise Err(s.ConnectorError_UpstreamUnavailable(f"{url}: the answer was cut off"))
    return status, bytes(data)


def json_answer(method, url, body=None):
    status, data = request(method, url, body)
    text = data.decode("utf-8", "replace")
    if status in (401, 403):
        raise Err(s.ConnectorError_Unauthorized(f"{url}: {status}"))
    if status == 429:
        raise Err(s.ConnectorError_RateLimited(1000))
    if status == 410:
        raise Err(s.ConnectorError_UpstreamRetired(s.Retirement(UPSTREAM, None, text[:200])))
    if status == 400:
        raise Err(s.ConnectorError_BadInput(f"{url}: {text[:200]}"))
    if status >= 500:
        raise Err(s.ConnectorError_UpstreamUnavailable(f"{url}: {status}"))
    if status != 200:
        raise Err(s.ConnectorError_Other(f"{url}: {status}"))
    try:
        return json.loads(text)
    except ValueError as e:
        raise Err(s.ConnectorError_MalformedResponse(f"{url}: not JSON: {e}"))


def text(v, key):
    value = v.get(key) if isinstance(v, dict) else None
    return value if isinstance(value, str) and value else None


def timestamp(t):
    if t is None:
        return None
    if len(t) > 3 and t[-3] in "+-" and t[-2:].isdigit() and "T" in t[:-3]:
        t = t + ":00"
    return t if RFC3339.match(t) else None


def value(v):
    return json.dumps(v, separators=(",", ":"), ensure_ascii=False)


def field(path, v, start=None):
    return s.Field(path, value(v), [], s.Period(start, None))


def map_person(p):
    """(id, status, record) for one personer[] entry."""
    pid = text(p, "personidentifikator")
    if pid is None:
        raise Err(s.ConnectorError_MalformedResponse("a person has no personidentifikator"))
    status = text(p, "status") or "IKKE_REGISTRERT"
    fields = []
    if status == "AKTIV":
        reservation = text(p, "reservasjon")
        if reservation not in (None, "JA", "NEI"):
            raise Err(s.ConnectorError_MalformedResponse(f"{pid}: reservasjon {reservation!r} is neither JA nor NEI"))
        fields.append(field("contact.reservation", reservation == "JA", timestamp(text(p, "reservasjonstidspunkt"))))
        notify = text(p, "varslingsstatus")
        if notify:
            fields.append(field("contact.notification-status",
                                {"KAN_VARSLES": "can-notify", "KAN_IKKE_VARSLES": "cannot-notify"}.get(notify, notify)))
        info = p.get("kontaktinformasjon") or {}
        if text(info, "epostadresse"):
            fields.append(field("contact.email", text(info, "epostadresse"), timestamp(text(info, "epostadresse_oppdatert"))))
        if text(info, "mobiltelefonnummer"):
            fields.append(field("contact.mobile", text(info, "mobiltelefonnummer"),
                                timestamp(text(info, "mobiltelefonnummer_oppdatert"))))
        post = p.get("digital_post") or {}
        if text(post, "postkasseadresse"):
            fields.append(field("contact.digital-mailbox", text(post, "postkasseadresse")))
        if text(post, "postkasseleverandoeradresse"):
            fields.append(field("contact.digital-mailbox-provider", text(post, "postkasseleverandoeradresse")))
        if text(p, "spraak"):
            fields.append(field("language.preferred", text(p, "spraak"), timestamp(text(p, "spraak_oppdatert"))))
    scheme = "no-dnr" if pid[0] in "4567" else "no-fnr"
    return pid, status, s.PersonRecord([s.PersonId(scheme, pid, True)], fields, UPSTREAM)


def scopes(persons):
    """(contact, mailbox): the scopes the answer was given under."""
    configured = host.config("scopes")
    if configured is not None:
        tokens = {t.strip() for t in re.split(r"[ ,]", configured)}
        return ("krr:global/kontaktinformasjon.read" in tokens, "krr:global/digitalpost.read" in tokens)
    active = [p for p in persons if isinstance(p, dict) and text(p, "status") == "AKTIV"]
    return (any("varslingsstatus" in p for p in active),
            any("digital_post" in p or "sertifikat" in p for p in active))


def covers(status, granted):
    if status != "AKTIV":
        return list(FIELDS)
    contact, mailbox = granted
    return [f for f in FIELDS if (contact or f not in CONTACT_SCOPE) and (mailbox or f not in MAILBOX_SCOPE)]


def lookup_answers(ids):
    results = []
    for i in range(0, len(ids), MAX_BATCH):
        chunk = ids[i:i + MAX_BATCH]
        body = json.dumps({"personidentifikatorer": chunk, "inkluderIkkeRegistrerte": True}).encode()
        answer = json_answer(types.Method_Post(), base_url() + "/personer", body)
        persons = answer.get("personer") if isinstance(answer, dict) else None
        if not isinstance(persons, list):
            raise Err(s.ConnectorError_MalformedResponse("the answer has no `personer` array"))
        granted = scopes(persons)
        mapped = {}
        for p in persons:
            pid, status, record = map_person(p)
            mapped[pid] = (status, a.Answer(record, covers(status, granted)))
        for requested in chunk:
            found = mapped.get(requested)
            outcome = (a.AnswerOutcome_Found(found[1]) if found and found[0] != "IKKE_REGISTRERT"
                       else a.AnswerOutcome_NotFound())
            results.append(a.AnswerResult(requested, outcome))
    return results


def change_answers(cursor):
    if cursor is None:
        start = 1
    elif cursor.isdigit():
        start = int(cursor)
    else:
        raise Err(s.ConnectorError_BadInput(f"cursor {cursor!r} is not a KRR change number"))
    page = json_answer(types.Method_Get(), f"{base_url()}/endringer?fraEndringsNummer={start}")
    to, latest, persons = page.get("tilEndringsNummer"), page.get("senesteEndringsNummer"), page.get("personer")
    if not isinstance(to, int) or not isinstance(latest, int) or not isinstance(persons, list):
        raise Err(s.ConnectorError_MalformedResponse(
            "the change page lacks tilEndringsNummer, senesteEndringsNummer or personer"))
    granted = scopes(persons)
    changes = []
    for n, p in enumerate(persons):
        pid = text(p, "personidentifikator")
        if pid is None:
            raise Err(s.ConnectorError_MalformedResponse("a changed person has no personidentifikator"))
        person = None
        if "status" in p:
            # An entry with a status is a whole record; without one the host looks it up.
            _, status, record = map_person(p)
            person = a.Answer(record, covers(status, granted)) if status != "IKKE_REGISTRERT" else None
        changes.append(a.AnswerChange(pid, s.ChangeKind_Updated(), "endring", str(start + n), None, person))
    return a.AnswerPage(changes, str(to + 1 if persons else start), to >= latest)


class Answers(exports.Answers):
    def lookup_answers(self, ids):
        return lookup_answers(ids)

    def change_answers(self, cursor):
        return change_answers(cursor)


class Source(exports.Source):
    """Contract 2.0's exports, from the answers (a 2.0 host asks these)."""

    def describe(self):
        return s.Description("python-krr", [UPSTREAM], FIELDS, ["lookup", "batch-lookup", "change-feed"], MAX_BATCH)

    def lookup_batch(self, ids):
        results = []
        for r in lookup_answers(ids):
            if isinstance(r.outcome, a.AnswerOutcome_Found):
                outcome = s.LookupOutcome_Found(r.outcome.value.person)
            elif isinstance(r.outcome, a.AnswerOutcome_Failed):
                outcome = s.LookupOutcome_Failed(r.outcome.value)
            else:
                outcome = s.LookupOutcome_NotFound()
            results.append(s.LookupResult(r.requested, outcome))
        return results

    def changes(self, cursor):
        page = change_answers(cursor)
        changes = [s.Change(c.id, c.kind, c.event, c.position, c.recorded, c.person.person if c.person else None)
                   for c in page.changes]
        return s.ChangePage(changes, page.next_cursor, page.caught_up)
