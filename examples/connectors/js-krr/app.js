// A KRR connector in JavaScript, built by componentize-js against folkhub's
// contract package (world folkhub:kit/http-answering-connector@2.2.0). It
// reads KRR's REST v2 with fetch() and answers as the Rust krr connector
// 2.2.0 does, field for field.
//
// The mapping follows Digdir's REST documentation of the lookup service
// (felleslosninger/docs `_docs/Kontaktregisteret/oppslagstjenesten_rest.md`),
// as connectors/krr/src/mapping.rs does: AKTIV gives reservation,
// notification status, e-mail, mobile, digital mailbox and language; SLETTET
// (left KRR) gives nothing and covers every field, so the host withdraws what
// KRR said before; IKKE_REGISTRERT is not found. What an answer covers
// follows the token's scopes (config `scopes`, or read from the answer), so a
// narrower scope never removes stored contact details.
//
// componentize-js conventions used here: a WIT record is an object with
// camelCase keys, a variant is `{ tag, val }`, an `option` is a value or
// `undefined`, and a function returning `result<T, E>` returns T or throws E.
// Exports may be async; the host waits for them, so fetch() can be awaited.

import { config } from 'folkhub:connector/host@2.2.0';

const PRODUCTION = 'https://kontaktregisteret.no/rest/v2';
const UPSTREAM = 'v2';
const MAX_BATCH = 1000;
const FIELDS = ['contact.email', 'contact.mobile', 'contact.reservation', 'contact.notification-status',
  'contact.digital-mailbox', 'contact.digital-mailbox-provider', 'language.preferred'];
const CONTACT_SCOPE = ['contact.email', 'contact.mobile', 'contact.notification-status', 'language.preferred'];
const MAILBOX_SCOPE = ['contact.digital-mailbox', 'contact.digital-mailbox-provider'];
const RFC3339 = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$/;

// The contract's connector-error, thrown from an export as its `err`.
const fail = (tag, val) => ({ tag, val });

function baseUrl() {
  return (config('base-url') ?? PRODUCTION).replace(/\/+$/, '');
}

// One exchange with KRR; the body parsed as JSON, or a connector-error thrown.
async function jsonAnswer(method, url, body) {
  let response;
  try {
    response = await fetch(url, {
      method,
      headers: body === undefined ? { accept: 'application/json' }
        : { accept: 'application/json', 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (e) {
    // The host refuses a host the operator did not grant before anything is sent.
    throw fail('upstream-unavailable', `${url}: ${e}`);
  }
  const status = response.status;
  const text = await response.text();
  if (status === 401 || status === 403) throw fail('unauthorized', `${url}: ${status}`);
  if (status === 429) throw fail('rate-limited', 1000);
  if (status === 410) throw fail('upstream-retired', { upstreamVersion: UPSTREAM, sunset: undefined, message: text.slice(0, 200) });
  if (status === 400) throw fail('bad-input', `${url}: ${text.slice(0, 200)}`);
  if (status >= 500) throw fail('upstream-unavailable', `${url}: ${status}`);
  if (status !== 200) throw fail('other', `${url}: ${status}`);
  try {
    return JSON.parse(text);
  } catch (e) {
    throw fail('malformed-response', `${url}: not JSON: ${e.message}`);
  }
}

function text(v, key) {
  const value = v !== null && typeof v === 'object' ? v[key] : undefined;
  return typeof value === 'string' && value !== '' ? value : undefined;
}

const has = (v, key) => v !== null && typeof v === 'object' && Object.prototype.hasOwnProperty.call(v, key);

// RFC 3339, with KRR's `+0100` offsets given their colon; anything else is dropped.
function timestamp(t) {
  if (t === undefined) return undefined;
  if (t.length > 3 && '+-'.includes(t[t.length - 3]) && /^\d\d$/.test(t.slice(-2)) && t.slice(0, -3).includes('T')) {
    t += ':00';
  }
  return RFC3339.test(t) ? t : undefined;
}

const field = (path, value, start) => ({ path, value: JSON.stringify(value), labels: [], valid: { start, end: undefined } });

// [id, status, person-record] for one `personer[]` entry.
function mapPerson(p) {
  const pid = text(p, 'personidentifikator');
  if (pid === undefined) throw fail('malformed-response', 'a person has no personidentifikator');
  const status = text(p, 'status') ?? 'IKKE_REGISTRERT';
  const fields = [];
  if (status === 'AKTIV') {
    const reservation = text(p, 'reservasjon');
    if (reservation !== undefined && reservation !== 'JA' && reservation !== 'NEI') {
      throw fail('malformed-response', `${pid}: reservasjon ${JSON.stringify(reservation)} is neither JA nor NEI`);
    }
    fields.push(field('contact.reservation', reservation === 'JA', timestamp(text(p, 'reservasjonstidspunkt'))));
    const notify = text(p, 'varslingsstatus');
    if (notify !== undefined) {
      const named = { KAN_VARSLES: 'can-notify', KAN_IKKE_VARSLES: 'cannot-notify' }[notify] ?? notify;
      fields.push(field('contact.notification-status', named));
    }
    const info = p.kontaktinformasjon ?? {};
    if (text(info, 'epostadresse') !== undefined) {
      fields.push(field('contact.email', text(info, 'epostadresse'), timestamp(text(info, 'epostadresse_oppdatert'))));
    }
    if (text(info, 'mobiltelefonnummer') !== undefined) {
      fields.push(field('contact.mobile', text(info, 'mobiltelefonnummer'),
        timestamp(text(info, 'mobiltelefonnummer_oppdatert'))));
    }
    const post = p.digital_post ?? {};
    if (text(post, 'postkasseadresse') !== undefined) {
      fields.push(field('contact.digital-mailbox', text(post, 'postkasseadresse')));
    }
    if (text(post, 'postkasseleverandoeradresse') !== undefined) {
      fields.push(field('contact.digital-mailbox-provider', text(post, 'postkasseleverandoeradresse')));
    }
    if (text(p, 'spraak') !== undefined) {
      fields.push(field('language.preferred', text(p, 'spraak'), timestamp(text(p, 'spraak_oppdatert'))));
    }
  }
  const scheme = '4567'.includes(pid[0]) ? 'no-dnr' : 'no-fnr';
  return [pid, status, { ids: [{ scheme, value: pid, active: true }], fields, upstreamVersion: UPSTREAM }];
}

// [contact, mailbox]: the scopes the answer was given under.
function scopes(persons) {
  const configured = config('scopes');
  if (configured !== undefined) {
    const tokens = new Set(configured.split(/[ ,]/).map((t) => t.trim()));
    return [tokens.has('krr:global/kontaktinformasjon.read'), tokens.has('krr:global/digitalpost.read')];
  }
  const active = persons.filter((p) => text(p, 'status') === 'AKTIV');
  return [active.some((p) => has(p, 'varslingsstatus')),
    active.some((p) => has(p, 'digital_post') || has(p, 'sertifikat'))];
}

function covers(status, [contact, mailbox]) {
  if (status !== 'AKTIV') return [...FIELDS];
  return FIELDS.filter((f) => (contact || !CONTACT_SCOPE.includes(f)) && (mailbox || !MAILBOX_SCOPE.includes(f)));
}

async function lookupAnswers(ids) {
  const results = [];
  for (let i = 0; i < ids.length; i += MAX_BATCH) {
    const chunk = ids.slice(i, i + MAX_BATCH);
    const answer = await jsonAnswer('POST', `${baseUrl()}/personer`,
      { personidentifikatorer: chunk, inkluderIkkeRegistrerte: true });
    const persons = answer?.personer;
    if (!Array.isArray(persons)) throw fail('malformed-response', 'the answer has no `personer` array');
    const granted = scopes(persons);
    const mapped = new Map();
    for (const p of persons) {
      const [pid, status, person] = mapPerson(p);
      mapped.set(pid, [status, { person, covers: covers(status, granted) }]);
    }
    for (const requested of chunk) {
      const found = mapped.get(requested);
      const outcome = found && found[0] !== 'IKKE_REGISTRERT' ? { tag: 'found', val: found[1] } : { tag: 'not-found' };
      results.push({ requested, outcome });
    }
  }
  return results;
}

async function changeAnswers(cursor) {
  let start;
  if (cursor === undefined || cursor === null) start = 1;
  else if (/^\d+$/.test(cursor)) start = Number(cursor);
  else throw fail('bad-input', `cursor ${JSON.stringify(cursor)} is not a KRR change number`);
  const page = await jsonAnswer('GET', `${baseUrl()}/endringer?fraEndringsNummer=${start}`);
  const to = page?.tilEndringsNummer;
  const latest = page?.senesteEndringsNummer;
  const persons = page?.personer;
  if (!Number.isInteger(to) || !Number.isInteger(latest) || !Array.isArray(persons)) {
    throw fail('malformed-response', 'the change page lacks tilEndringsNummer, senesteEndringsNummer or personer');
  }
  const granted = scopes(persons);
  const changes = persons.map((p, n) => {
    const pid = text(p, 'personidentifikator');
    if (pid === undefined) throw fail('malformed-response', 'a changed person has no personidentifikator');
    let person;
    if (has(p, 'status')) {
      // An entry with a status is a whole record; without one the host looks it up.
      const [, status, record] = mapPerson(p);
      person = status !== 'IKKE_REGISTRERT' ? { person: record, covers: covers(status, granted) } : undefined;
    }
    return { id: pid, kind: { tag: 'updated' }, event: 'endring', position: String(start + n), recorded: undefined, person };
  });
  return { changes, nextCursor: String(persons.length > 0 ? to + 1 : start), caughtUp: to >= latest };
}

export const answers = { lookupAnswers, changeAnswers };

// Contract 2.0's exports, from the answers (a 2.0 host asks these).
export const source = {
  describe() {
    return { source: 'js-krr', upstreamVersions: [UPSTREAM], fields: FIELDS, capabilities: ['lookup', 'batch-lookup', 'change-feed'], maxBatch: MAX_BATCH };
  },
  async lookupBatch(ids) {
    return (await lookupAnswers(ids)).map(({ requested, outcome }) => ({
      requested,
      outcome: outcome.tag === 'found' ? { tag: 'found', val: outcome.val.person } : outcome,
    }));
  },
  async changes(cursor) {
    const page = await changeAnswers(cursor);
    return { ...page, changes: page.changes.map((c) => ({ ...c, person: c.person?.person })) };
  },
};
