from sb_otel._cli import main

raise SystemExit(main())
