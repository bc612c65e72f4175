#!/usr/bin/env node
// The account page as a signer, in headless Chromium with a virtual passkey, for the
// hostile-server tests: signs up at <pdsUrl>, registers a passkey there and stays connected as
// the account's signer. Commands on stdin:
//   goto <url>       open <url>/account (same hostname, so the same passkey and cookie), unlock
//   policy <name>    how the "person" answers the page's dialogs: careful (approves renames,
//                    declines changes of control), identity (approves those too, but not the
//                    loss of this key), all (approves everything)
// Prints a JSON line {did, handle, password, signingKey}, then "page signer connected" each
// time the page is connected, and "policy <name>" when a policy is set.
// Usage: node browser-signer.js <pdsUrl> [--chromium /usr/bin/chromium]
const readline = require('readline')
const { AtpAgent } = require('@atproto/api')
const { option, launchChromium, addVirtualPasskey } = require('./lib')

const args = process.argv.slice(2)
const service = args[0]

async function connected(page) {
  await page.waitForFunction(() => document.getElementById('signer-state').textContent.startsWith('Connected'), null, { timeout: 60000 })
  console.log('page signer connected')
}

async function main() {
  const agent = new AtpAgent({ service })
  const desc = (await agent.com.atproto.server.describeServer()).data
  const handle = `p${Date.now().toString(36).slice(-7)}${desc.availableUserDomains[0]}`
  const password = `pw-${Math.random().toString(36).slice(2)}`
  const { did } = (await agent.createAccount({ handle, email: `${handle.split('.')[0]}@example.com`, password })).data

  const { context, page } = await launchChromium(option(args, '--chromium'))
  page.on('pageerror', (e) => console.error(`page error: ${e.message}`))
  page.on('console', (m) => console.error(`page console: ${m.text()}`))
  let policy = 'careful'
  page.on('dialog', (d) => {
    const text = d.message()
    const control = text.includes('changes who controls') || text.includes('act for')
    const loss = text.includes('can no longer')
    const yes = policy === 'all' || (policy === 'identity' && !loss) || (policy === 'careful' && !control && !loss)
    console.error(`dialog (${yes ? 'accepted' : 'declined'}): ${text.replace(/\n/g, ' | ')}`)
    yes ? d.accept() : d.dismiss()
  })

  await page.goto(`${service}/account/signin`)
  await page.fill('input[name=identifier]', handle)
  await page.fill('input[name=password]', password)
  await page.click('button[type=submit]')
  await page.waitForSelector('body[data-ready="1"]')
  await addVirtualPasskey(context, page)
  await page.click('#register')
  await connected(page)
  const signingKey = (await page.textContent('#status')).match(/did:key:z[1-9A-HJ-NP-Za-km-z]+/)[0]
  console.log(JSON.stringify({ did, handle, password, signingKey }))

  const lines = readline.createInterface({ input: process.stdin })
  for await (const line of lines) {
    const [command, value] = line.trim().split(/\s+/)
    if (command === 'goto') {
      await page.goto(`${value}/account`)
      await page.waitForSelector('body[data-ready="1"]')
      await page.click('#unlock')
      await connected(page)
    } else if (command === 'log') {
      console.error((await page.$$eval('#log li', (lis) => lis.map((li) => li.textContent))).join('\n'))
    } else if (command === 'policy') {
      policy = value
      console.log(`policy ${value}`)
    }
  }
  await context.close()
}

main().catch((err) => {
  console.error(err)
  process.exit(1)
})
