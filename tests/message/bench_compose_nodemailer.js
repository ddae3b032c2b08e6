// CPU per message built by nodemailer's MailComposer (what a pool does before the envelope), for the
// same two messages as bench_compose.py. Uses the bench's own install (make bench-smtp fills it):
//     node tests/message/bench_compose_nodemailer.js [count] [nodemailer10|nodemailer8]
const path = require("path");
const count = Number(process.argv[2] || 2000);
const pkg = process.argv[3] || "nodemailer10";
const benchRequire = require("module").createRequire(path.join(__dirname, "../../bench/node/package.json"));
const mailComposer = benchRequire(`${pkg}/lib/mail-composer`);
const MailComposer = mailComposer.default || mailComposer;

let csv = "";
for (let n = 0; n < 1100; n++) csv += `${n},customer-${n}@example.com,Jörg Müller,${(n * 3.25).toFixed(2)},2026-12-01\n`;
const CSV = Buffer.from(csv).subarray(0, 50000);
const TEXT = "Hello Ada,\n\nyour order 1234 has shipped. Track it at https://example.com/t/1234.\n\nThanks,\nThe Shop\n";
const HTML = "<html><body><p>Hello Ada,</p><p>your order <b>1234</b> has shipped. <a href='https://example.com/t/1234'>Track it</a>.</p><p>Thanks,<br>The Shop</p></body></html>";
const base = { from: "Shop <shop@example.com>", to: "Ada Lovelace <ada@example.com>", subject: "Your order has shipped", text: TEXT };
const SHAPES = { "text-only": base, "text+html+attachment": { ...base, html: HTML, attachments: [{ filename: "orders.csv", content: CSV }] } };

function build(options) {
  return new Promise((resolve, reject) => new MailComposer(options).compile().build((err, message) => (err ? reject(err) : resolve(message))));
}

(async () => {
  for (const [name, options] of Object.entries(SHAPES)) {
    for (let i = 0; i < 50; i++) await build(options);
    const start = process.cpuUsage();
    let message;
    for (let i = 0; i < count; i++) message = await build(options);
    const used = process.cpuUsage(start);
    const ms = (used.user + used.system) / 1000 / count;
    console.log(`${(pkg + " " + name).padEnd(35)} ${ms.toFixed(3)} ms CPU per message over ${count} (${message.length} bytes)`);
  }
})();
