set terminal pngcairo size 900,560 enhanced font 'Sans,11'
set output 'results/usmoe_training_free_load_row0.png.tmp.22902'
$m << EOD
0.113892 0.144531 0.0969849 0.0982056 0.159241 0.113586 0.153198 0.120361
0.11792 0.129822 0.107788 0.163696 0.137451 0.1073 0.0918579 0.144165
EOD
set title "Token choice (trained): load (last epoch, first seed)"
set xlabel "expert"
set ylabel "MoE layer"
set grid
set key outside right top
unset grid
set palette rgb 33,13,10
set cblabel 'share of routed pairs'
set xtics 1
set ytics 1
plot $m matrix with image notitle
