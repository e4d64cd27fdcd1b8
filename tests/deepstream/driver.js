'use strict'
/**
 * @deepstream/client instances driven over stdin/stdout, one JSON object a line, for tests/test_deepstream.py.
 *
 *   test -> driver   {"id": n, "cmd": "<command>", ...arguments}
 *   driver -> test   {"id": n, "ok": true, "result": ...} | {"id": n, "ok": false, "error": "..."}
 *   driver -> test   {"ev": "event"|"record"|"presence"|"error", "client": ..., ...}
 *
 * Commands (`client` names a client made by `connect`):
 *   connect {client, url, username}       log in (auth `none`: the username is the presence name)
 *   close {client}
 *   event_subscribe {client, event}       every event -> {"ev":"event","client","event","data"}
 *   event_emit {client, event, data}
 *   rpc_provide {client, rpc}             answers {"by": client, "echo": data}
 *   rpc_make {client, rpc, data}          -> the answer
 *   rpc_rtt {client, rpc, count}          `count` sequential calls -> their round-trip times in ms
 *   record_subscribe {client, record}     every update -> {"ev":"record","client","record","data"}
 *   record_set {client, record, data}     set, waiting for the write acknowledgement
 *   record_get {client, record}           -> the record's data
 *   presence_subscribe {client}           every login/logout -> {"ev":"presence","client","username","online"}
 *   presence_get {client}                 -> the usernames online (except the client's own)
 *   sync {client}                         a round trip to the client's server (a barrier: subscriptions
 *                                         are sent at once, in order)
 * The driver exits when stdin closes.
 */

const readline = require('readline')
const { DeepstreamClient } = require('@deepstream/client')

const clients = new Map()
const records = new Map()

function say (object) {
  process.stdout.write(JSON.stringify(object) + '\n')
}

function client (name) {
  const found = clients.get(name)
  if (!found) {
    throw new Error(`no client ${name}`)
  }
  return found
}

async function getRecord (name, recordName) {
  const key = `${name}\u0000${recordName}`
  let record = records.get(key)
  if (!record) {
    record = client(name).record.getRecord(recordName)
    records.set(key, record)
  }
  await record.whenReady()
  return record
}

const commands = {
  async connect ({ client: name, url, username }) {
    const ds = new DeepstreamClient(url, {
      // the test stops servers: do not let a dead server's clients linger in retries
      maxReconnectAttempts: 0,
      offlineEnabled: false,
      // subscribe at once rather than in 100 ms batches, so that `sync` after a subscribe is a barrier
      subscriptionInterval: 0
    })
    ds.on('error', (error, event, topic) => say({ ev: 'error', client: name, error: String(error), event, topic }))
    clients.set(name, ds)
    await ds.login({ username })
    return true
  },

  async close ({ client: name }) {
    client(name).close()
    clients.delete(name)
    return true
  },

  async event_subscribe ({ client: name, event }) {
    client(name).event.subscribe(event, (data) => say({ ev: 'event', client: name, event, data }))
    return true
  },

  async event_emit ({ client: name, event, data }) {
    client(name).event.emit(event, data)
    return true
  },

  async rpc_provide ({ client: name, rpc }) {
    client(name).rpc.provide(rpc, (data, response) => {
      response.send({ by: name, echo: data })
    })
    return true
  },

  async rpc_make ({ client: name, rpc, data }) {
    return client(name).rpc.make(rpc, data)
  },

  async rpc_rtt ({ client: name, rpc, count }) {
    const ds = client(name)
    const times = []
    for (let i = 0; i < count; i++) {
      const start = process.hrtime.bigint()
      const answer = await ds.rpc.make(rpc, i)
      const end = process.hrtime.bigint()
      if (!answer || answer.echo !== i) {
        throw new Error(`call ${i} got ${JSON.stringify(answer)}`)
      }
      times.push(Number(end - start) / 1e6)
    }
    return times
  },

  async record_subscribe ({ client: name, record: recordName }) {
    const record = await getRecord(name, recordName)
    record.subscribe((data) => say({ ev: 'record', client: name, record: recordName, data }))
    return record.get()
  },

  async record_set ({ client: name, record: recordName, data }) {
    const record = await getRecord(name, recordName)
    await record.setWithAck(data)
    return true
  },

  async record_get ({ client: name, record: recordName }) {
    const record = await getRecord(name, recordName)
    return record.get()
  },

  async presence_subscribe ({ client: name }) {
    client(name).presence.subscribe((username, online) => say({ ev: 'presence', client: name, username, online }))
    return true
  },

  async presence_get ({ client: name }) {
    return client(name).presence.getAll()
  },

  // a round trip to the client's server, after everything the client sent before it
  async sync ({ client: name }) {
    await client(name).presence.getAll()
    return true
  }
}

const lines = readline.createInterface({ input: process.stdin })
lines.on('line', async (line) => {
  if (!line.trim()) {
    return
  }
  let request
  try {
    request = JSON.parse(line)
  } catch (error) {
    say({ id: null, ok: false, error: `bad request line: ${error.message}` })
    return
  }
  const command = commands[request.cmd]
  if (!command) {
    say({ id: request.id, ok: false, error: `unknown command ${request.cmd}` })
    return
  }
  try {
    const result = await command(request)
    say({ id: request.id, ok: true, result: result === undefined ? null : result })
  } catch (error) {
    say({ id: request.id, ok: false, error: String(error && error.message ? error.message : error) })
  }
})
lines.on('close', () => {
  for (const ds of clients.values()) {
    try { ds.close() } catch (error) {}
  }
  // let the close messages go out
  setTimeout(() => process.exit(0), 200)
})
say({ ev: 'started' })
