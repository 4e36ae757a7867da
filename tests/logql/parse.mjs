// Parses LogQL with Grafana's own LogQL grammar (@grafana/lezer-logql, the parser Grafana's Loki editor uses).
// stdin: a JSON array of queries. stdout: a JSON array, one entry per query:
//   {"errors": [offset, ...], "selectors": [[{"label", "op", "value"}, ...], ...]}
// where "errors" are the offsets of the grammar's error nodes (none: the query parses) and "selectors" lists the
// matchers of every stream selector `{...}` (label filters in pipelines are not stream matchers). "value" is the
// string literal as written, quotes included; tests/logql_check.py decodes it and applies Loki's matcher rule.
import { readFileSync } from 'node:fs';
import { parser } from '@grafana/lezer-logql';

const queries = JSON.parse(readFileSync(0, 'utf8'));
const results = queries.map((query) => {
  const errors = [];
  const selectors = [];
  const tree = parser.parse(query);
  tree.iterate({
    enter(node) {
      if (node.type.isError) errors.push(node.from);
    },
  });
  tree.iterate({
    enter(node) {
      if (node.name === 'Selector') {
        const matchers = [];
        const cursor = node.node.cursor();
        cursor.iterate((inner) => {
          if (inner.name !== 'Matcher') return true;
          const part = (name) => {
            const child = inner.node.getChild(name);
            return child ? query.slice(child.from, child.to) : null;
          };
          const op = ['Eq', 'Neq', 'Re', 'Nre'].map(part).find((text) => text !== null) ?? null;
          matchers.push({ label: part('Identifier'), op, value: part('String') });
          return false;
        });
        selectors.push(matchers);
        return false;
      }
      return true;
    },
  });
  return { errors, selectors };
});
process.stdout.write(JSON.stringify(results));
