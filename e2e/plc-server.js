// Starts the real did:plc directory server (@did-plc/server) with its in-memory database,
// listening on 127.0.0.1 only. Usage: node plc-server.js [port]   (port 0 picks a free one)
// Prints "PLC listening on http://127.0.0.1:<port>" once ready.
const { PlcServer, Database } = require('@did-plc/server')

async function main() {
  const wanted = Number.parseInt(process.argv[2] ?? '2582', 10)
  const server = PlcServer.create({ db: Database.mock(), port: wanted })
  // PlcServer.start() listens on every interface; bind loopback ourselves instead.
  const originalListen = server.app.listen.bind(server.app)
  server.app.listen = (port, ...rest) => originalListen(port, '127.0.0.1', ...rest)
  const http = await server.start()
  const { port } = http.address()
  console.log(`PLC listening on http://127.0.0.1:${port}`)
  const stop = async () => {
    await server.destroy()
    process.exit(0)
  }
  process.on('SIGTERM', stop)
  process.on('SIGINT', stop)
}

main().catch((err) => {
  console.error(err)
  process.exit(1)
})
